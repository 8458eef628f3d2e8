"""Typed property declarations (core.properties) and their place in the line check."""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
import pytest

from profile_import.core.codes import LineRejected, RejectCode
from profile_import.core.commands import CheckSettings
from profile_import.core.idempotency import input_fingerprint
from profile_import.core.properties import Declaration, DeclarationError, Declarations

from ...helpers import message_lines, read_ndjson, run_cli, upsert, write_lines

F16 = 65504.0
F32 = 3.4028234663852886e38

# (value_type, values that fit, values that do not): each type at and beyond its limits.
CASES: list[tuple[str, list[Any], list[Any]]] = [
    ("int8", [-128, 127, 0, 18.0], [-129, 128, 1.5, "1", True, None, [1]]),
    ("int16", [-32768, 32767], [-32769, 32768]),
    ("int32", [-(2**31), 2**31 - 1], [-(2**31) - 1, 2**31]),
    ("int64", [-(2**63), 2**63 - 1], [2**63, 0.5]),
    ("uint8", [0, 255], [-1, 256]),
    ("uint16", [0, 65535], [-1, 65536]),
    ("uint32", [0, 2**32 - 1], [-1, 2**32]),
    ("uint64", [0, 2**64 - 1], [-1, 1.5]),
    ("float16", [F16, -F16, 0.1, 3], [65504.5, -65505.0, 1e5, "1.0", False]),
    ("float32", [F32, -F32, 1e38], [3.41e38, -3.41e38, 1e300]),
    ("float64", [1e308, -1e308, 5e-324, 7], ["1", None, True]),
    ("bool", [True, False], [0, 1, "true", None]),
    ("unicode", ["", "x" * 10_000, "é😀"], [1, None, ["a"]]),
    ("unicode3", ["", "abc", "éé😀"], ["abcd", "😀😀😀😀", 3]),
    ("unicode1", ["a"], ["ab"]),
]


def checker(*declarations: Declaration, allow: bool = False) -> Any:
    return Declarations(declarations, allow).checker()


@pytest.mark.parametrize(("value_type", "fit", "misfit"), CASES)
def test_every_type_at_and_beyond_its_limits(
    value_type: str, fit: list[Any], misfit: list[Any]
) -> None:
    single = checker(Declaration("p", value_type))
    repeated = checker(Declaration("p", value_type, repeated=True))
    for value in fit:
        assert single.violation({"p": value}) is None, value
        assert repeated.violation({"p": [value, value]}) is None, value
    for value in misfit:
        problem = single.violation({"p": value})
        assert problem is not None and problem.startswith("user_profile/p: "), value
        assert f"does not fit {value_type} (" in problem
        problem = repeated.violation({"p": [*fit, value]})
        assert problem is not None and problem.startswith(f"user_profile/p/{len(fit)}: "), value
    assert repeated.violation({"p": []}) is None


def test_messages_name_the_property_its_type_and_the_value() -> None:
    c = checker(Declaration("age", "int8"), Declaration("tags", "unicode4", repeated=True))
    assert c.violation({"age": 300}) == "user_profile/age: 300 does not fit int8 (-128..127)"
    assert c.violation({"tags": "ab"}) == (
        'user_profile/tags: "ab" does not fit repeated unicode4 (an array)'
    )
    assert c.violation({"tags": ["ab", "abcde"]}) == (
        'user_profile/tags/1: "abcde" does not fit unicode4 (a string of at most 4)'
    )
    assert c.violation({"age": 300}, redact=True) == (
        "user_profile/age: the value does not fit int8 (-128..127)"
    )
    long = c.violation({"age": "x" * 500})
    assert long is not None and len(long) < 150 and long.endswith("does not fit int8 (-128..127)")


def test_declared_properties_may_be_absent_and_undeclared_ones_need_the_option() -> None:
    strict = checker(Declaration("age", "uint8"))
    assert strict.violation({}) is None
    assert strict.violation({"age": 3, "city": "x"}) == (
        "user_profile/city: not declared in --properties-file "
        "(or pass --allow-undeclared-properties)"
    )
    lenient = checker(Declaration("age", "uint8"), allow=True)
    assert lenient.violation({"age": 3, "city": {"any": ["thing"]}}) is None
    assert lenient.violation({"age": -3, "city": "x"}) is not None


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"property_name": "a"}, "a declarations file is a JSON array"),
        (["a"], "declaration 1: a declaration is a JSON object"),
        ([{"property_name": "a", "value_type": "int9"}], "1: unknown value_type 'int9'"),
        ([{"property_name": "a", "value_type": "unicode0"}], "unknown value_type 'unicode0'"),
        ([{"property_name": "a", "value_type": "float"}], "unknown value_type 'float'"),
        ([{"property_name": "a", "value_type": 8}], "value_type must be a string"),
        ([{"property_name": "a.b", "value_type": "int8"}], "'a.b' is not a top-level"),
        ([{"property_name": "", "value_type": "int8"}], "'' is not a top-level"),
        ([{"property_name": "x" * 65, "value_type": "int8"}], "is not a top-level"),
        ([{"property_name": 3, "value_type": "int8"}], "3 is not a top-level"),
        ([{"value_type": "int8"}], "None is not a top-level"),
        (
            [
                {"property_name": "a", "value_type": "int8"},
                {"property_name": "a", "value_type": "bool"},
            ],
            "declaration 2: property 'a' is declared twice \\(also declaration 1\\)",
        ),
        ([{"property_name": "a", "value_type": "int8", "repeated": 1}], "repeated must be"),
        ([{"property_name": "a", "value_type": "int8", "type": "x"}], "unknown field 'type'"),
    ],
)
def test_invalid_declarations_are_refused(doc: Any, problem: str) -> None:
    with pytest.raises(DeclarationError, match=problem):
        Declarations.parse(doc)


def test_parse_reads_the_documented_shape() -> None:
    doc = [
        {"property_name": "age", "value_type": "int8", "repeated": False},
        {"property_name": "tags", "value_type": "unicode32", "repeated": True},
        {"property_name": "opt-in", "value_type": "bool"},
    ]
    parsed = Declarations.from_json(orjson.dumps(doc), allow_undeclared=True)
    assert parsed == Declarations(
        (
            Declaration("age", "int8"),
            Declaration("tags", "unicode32", True),
            Declaration("opt-in", "bool"),
        ),
        True,
    )
    with pytest.raises(DeclarationError, match="not valid JSON"):
        Declarations.from_json(b"[")


def test_fingerprint_follows_meaning_not_spelling() -> None:
    a = Declarations((Declaration("a", "int8"), Declaration("b", "bool")))
    b = Declarations((Declaration("b", "bool"), Declaration("a", "int8")))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != Declarations(a.properties, True).fingerprint()
    assert a.fingerprint() != Declarations((Declaration("a", "int16"),)).fingerprint()
    assert a.fingerprint() != Declarations((Declaration("a", "int8", True),)).fingerprint()


def upsert_line(profile: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"operation": "UPSERT", "email_hash": "h", "force_replace": True, "user_profile": profile}
    )


def test_the_line_check_rejects_a_misfit_and_both_checks_must_pass() -> None:
    declarations = Declarations((Declaration("age", "uint8"),), allow_undeclared=True)
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    check = CheckSettings(profile_schema=schema, declarations=declarations).build().check
    assert check(upsert_line({"age": 3, "name": "x"})) is not None
    with pytest.raises(LineRejected) as declared:
        check(upsert_line({"age": 256, "name": "x"}))
    assert declared.value.code is RejectCode.PROFILE_SCHEMA_VIOLATION
    assert declared.value.message == "user_profile/age: 256 does not fit uint8 (0..255)"
    with pytest.raises(LineRejected) as schema_fault:
        check(upsert_line({"age": 3, "name": 1}))
    assert schema_fault.value.code is RejectCode.PROFILE_SCHEMA_VIOLATION
    assert schema_fault.value.message.startswith("user_profile/name: ")
    # A DELETE carries no profile to check.
    assert check(b'{"operation":"DELETE","email_hash":"h","user_profile":{"age":-1}}') is not None


# --- the run ------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_rejects_misfits_and_its_fingerprint_covers_the_declarations(tmp_path: Path) -> None:
    declarations = tmp_path / "props.json"
    declarations.write_text(
        json.dumps(
            [
                {"property_name": "age", "value_type": "uint8", "repeated": False},
                {"property_name": "tags", "value_type": "unicode8", "repeated": True},
            ]
        )
    )
    commands = write_lines(
        tmp_path / "in.ndjson",
        [
            upsert({"email_hash": "a"}, {"age": 30, "tags": ["x"]}),
            upsert({"email_hash": "b"}, {"age": 300}),
            upsert({"email_hash": "c"}, {"tags": ["much too long"]}),
            upsert({"email_hash": "d"}, {"age": 1, "city": "Oslo"}),
        ],
    )
    store, rejects = tmp_path / "store", tmp_path / "rejects.ndjson"
    args = ("run", "--store", store, "--rejects", rejects, "--properties-file", declarations)
    result = run_cli(*args, commands)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["accepted"] == 1
    assert report["rejects_by_code"] == {"PROFILE_SCHEMA_VIOLATION": 3}
    assert [(r["line"], r["message"]) for r in read_ndjson(rejects)] == [
        (2, "user_profile/age: 300 does not fit uint8 (0..255)"),
        (3, 'user_profile/tags/0: "much too long" does not fit unicode8 (a string of at most 8)'),
        (
            4,
            "user_profile/city: not declared in --properties-file "
            "(or pass --allow-undeclared-properties)",
        ),
    ]
    again = json.loads(run_cli(*args, commands).stdout)
    assert again["status"] == "ALREADY_APPLIED"
    # Other declarations change what a line means: the same input is a new import.
    lenient = json.loads(run_cli(*args, "--allow-undeclared-properties", commands).stdout)
    assert lenient["status"] == "SUCCEEDED_WITH_ERRORS" and lenient["counts"]["accepted"] == 2
    assert lenient["fingerprint"] != report["fingerprint"]
    # Without declarations, the input fingerprint is what it always was.
    plain = json.loads(run_cli("run", "--store", tmp_path / "s2", "--dry-run", commands).stdout)
    assert plain["inputs"][0]["fingerprint"] == input_fingerprint(
        sha256(commands.read_bytes()).hexdigest(),
        {"default_compartment_id": None, "profile_schema": None, "max_line_bytes": 1 << 20},
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            '[{"property_name": "a", "value_type": "int7"}]',
            "declaration 1: unknown value_type 'int7'",
        ),
        ('[{"property_name": "a b", "value_type": "int8"}]', "declaration 1: property_name 'a b'"),
        (
            '[{"property_name": "a", "value_type": "int8"}, '
            '{"property_name": "a", "value_type": "int8"}]',
            "declaration 2: property 'a' is declared twice",
        ),
        ("[", "not valid JSON"),
    ],
)
def test_invalid_declarations_are_a_usage_error(tmp_path: Path, content: str, reason: str) -> None:
    declarations = tmp_path / "props.json"
    declarations.write_text(content)
    commands = write_lines(tmp_path / "in.ndjson", [upsert({"email_hash": "a"}, {})])
    result = run_cli("run", "--store", tmp_path / "s", "--properties-file", declarations, commands)
    assert result.returncode == 2 and not (tmp_path / "s").exists()
    [line] = message_lines(result.stderr)
    assert line.startswith("profile-import: error: ")
    assert f"--properties-file {declarations}: {reason}" in line


def test_allowing_undeclared_properties_needs_declarations(tmp_path: Path) -> None:
    commands = write_lines(tmp_path / "in.ndjson", [upsert({"email_hash": "a"}, {})])
    result = run_cli("run", "--store", tmp_path / "s", "--allow-undeclared-properties", commands)
    assert result.returncode == 2
    assert "--allow-undeclared-properties needs --properties-file" in result.stderr
