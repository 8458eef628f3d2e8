from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_import import schemas
from profile_import.core.codes import PRECEDENCE, LineRejected, RejectCode
from profile_import.core.commands import (
    CheckSettings,
    CommandChecker,
    classify,
    load_accepted,
    nul_path,
)
from profile_import.core.fold import DELETES, MERGES, REPLACES, Command
from profile_import.core.validation import SchemaValidator

pytestmark = [pytest.mark.spec(section=1), pytest.mark.spec(section=3)]

CHECKER = CheckSettings().build()
GOOD = {"operation": "UPSERT", "email_hash": "h", "force_replace": True, "user_profile": {"a": 1}}


def code_of(line: bytes | str, checker: CommandChecker = CHECKER) -> RejectCode | None:
    content = line.encode() if isinstance(line, str) else line
    try:
        checker.check(content)
    except LineRejected as rejected:
        return rejected.code
    return None


def with_(**changes: Any) -> str:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (with_(), None),
        ('  {"operation":"DELETE","user_agent_id":"v"}  ', None),
        ('{"operation":"DELETE","email_hash":"h","force_replace":true,"user_profile":{}}', None),
        (with_(merge_objects=True), None),
        (
            '{"operation":"UPSERT","email_hash":"h","force_replace":true,"user_profile":{',
            RejectCode.INVALID_JSON,
        ),
        (b'{"operation":"DELETE","email_hash":"\xff"}', RejectCode.INVALID_JSON),
        ("not json", RejectCode.INVALID_JSON),
        ("[1, 2]", RejectCode.NOT_AN_OBJECT),
        ('"UPSERT"', RejectCode.NOT_AN_OBJECT),
        ("null", RejectCode.NOT_AN_OBJECT),
        (with_(operation=...), RejectCode.INVALID_OPERATION),
        (with_(operation="upsert"), RejectCode.INVALID_OPERATION),
        (with_(operation=["UPSERT"]), RejectCode.INVALID_OPERATION),
        (with_(email_hash=...), RejectCode.MISSING_IDENTIFIER),
        (with_(user_agent_id="v"), RejectCode.MULTIPLE_IDENTIFIERS),
        (with_(email_hash=""), RejectCode.INVALID_IDENTIFIER),
        (with_(email_hash=..., user_account_id="u"), RejectCode.INVALID_IDENTIFIER),
        (
            with_(email_hash=..., compartment_id=1, user_account_id=2.5),
            RejectCode.INVALID_IDENTIFIER,
        ),
        (with_(force_replace=...), RejectCode.MISSING_FORCE_REPLACE),
        (with_(user_profile=...), RejectCode.MISSING_USER_PROFILE),
        (with_(force_replace="yes"), RejectCode.INVALID_FIELD),
        (with_(force_replace=None), RejectCode.INVALID_FIELD),
        (with_(merge_objects=1), RejectCode.INVALID_FIELD),
        (with_(user_profile=[]), RejectCode.INVALID_FIELD),
        ('{"operation":"DELETE","email_hash":"h","user_profile":"x"}', RejectCode.INVALID_FIELD),
        (with_(extra=1), RejectCode.UNKNOWN_FIELD),
        (with_(Operation="UPSERT"), RejectCode.UNKNOWN_FIELD),
        # Several faults: the first code in SPEC §3's table wins.
        (with_(operation="MERGE", email_hash=..., extra=1), RejectCode.INVALID_OPERATION),
        (with_(email_hash=..., force_replace=...), RejectCode.MISSING_IDENTIFIER),
        (with_(user_agent_id="", force_replace="x"), RejectCode.MULTIPLE_IDENTIFIERS),
        (with_(email_hash=3, force_replace=...), RejectCode.INVALID_IDENTIFIER),
        (with_(force_replace=..., user_profile=...), RejectCode.MISSING_FORCE_REPLACE),
        (with_(user_profile=..., force_replace=1), RejectCode.MISSING_USER_PROFILE),
        (with_(force_replace=1, extra=1), RejectCode.INVALID_FIELD),
    ],
)
def test_check_codes(line: str | bytes, code: RejectCode | None) -> None:
    assert code_of(line) is code


@pytest.mark.parametrize("line", ["", "   ", "\t", " \r"])
def test_blank_lines_are_not_commands(line: str) -> None:
    assert CHECKER.check(line.encode()) is None


def test_line_too_large_wins_over_everything() -> None:
    checker = CheckSettings(max_line_bytes=10).build()
    assert code_of("x" * 11, checker) is RejectCode.LINE_TOO_LARGE
    assert code_of("[1]" + " " * 7, checker) is RejectCode.NOT_AN_OBJECT  # exactly the limit
    with pytest.raises(LineRejected) as caught:
        checker.check(b"[1]", size=5000)  # the reader cut a longer line short
    assert caught.value.code is RejectCode.LINE_TOO_LARGE
    assert "5000 bytes" in caught.value.message


def test_default_compartment_makes_a_bare_account_valid() -> None:
    line = with_(email_hash=..., user_account_id=7).encode()
    assert code_of(line) is RejectCode.INVALID_IDENTIFIER
    accepted = CheckSettings(default_compartment_id="1000").build().check(line)
    assert accepted is not None and accepted.key == b"a\x001000\x007"


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"force_replace": True}, REPLACES),
        ({"force_replace": False}, MERGES),
        ({"force_replace": False, "merge_objects": True}, MERGES),
        ({"operation": "DELETE", "force_replace": ..., "user_profile": ...}, DELETES),
        ({"operation": "DELETE", "force_replace": True}, DELETES),
    ],
)
def test_an_accepted_line_carries_its_kind(changes: dict[str, Any], kind: int) -> None:
    accepted = CHECKER.check(with_(**changes).encode())
    assert accepted is not None and accepted.kind == kind


PROFILE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"age": {"type": "integer", "minimum": 0}, "email": {"format": "email"}},
    "required": ["age"],
}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (with_(user_profile={"age": 3}), None),
        (with_(user_profile={"age": -1}), RejectCode.PROFILE_SCHEMA_VIOLATION),
        (with_(user_profile={}), RejectCode.PROFILE_SCHEMA_VIOLATION),
        (with_(user_profile={"age": 3, "email": "not an email"}), None),  # formats annotate
        ('{"operation":"DELETE","email_hash":"h","user_profile":{}}', None),  # ignored for DELETE
        (with_(user_profile={}, extra=1), RejectCode.UNKNOWN_FIELD),
    ],
)
def test_profile_schema(line: str, code: RejectCode | None) -> None:
    checker = CheckSettings(profile_schema=PROFILE_SCHEMA).build()
    assert code_of(line, checker) is code


@pytest.mark.parametrize("redact", [False, True])
def test_profile_schema_messages_are_redactable(redact: bool) -> None:
    checker = CheckSettings(profile_schema=PROFILE_SCHEMA, redact=redact).build()
    with pytest.raises(LineRejected) as caught:
        checker.check(with_(user_profile={"age": -123456}).encode())
    assert caught.value.message.startswith("user_profile/age:")
    assert ("-123456" in caught.value.message) is not redact


def test_a_profile_of_the_wrong_type_says_so() -> None:
    with pytest.raises(LineRejected) as caught:
        CHECKER.check(with_(user_profile=[1]).encode())
    assert caught.value.message == "user_profile must be an object, not array"


def test_messages_name_fields_not_values() -> None:
    with pytest.raises(LineRejected) as caught:
        CHECKER.check(with_(force_replace="SECRET-VALUE").encode())
    assert caught.value.message == "force_replace must be a boolean, not string"


BIG = 123456789012345678901234567890  # beyond 64 bits: orjson alone would make it a float
DELETE_WITH_BIG = f'{{"operation":"DELETE","email_hash":"h","user_profile":{{"n":{BIG}}}}}'


@pytest.mark.parametrize(
    ("line", "code", "key"),
    [
        (
            with_(email_hash=..., compartment_id=BIG, user_account_id=1),
            None,
            b"a\x00123456789012345678901234567890\x001",
        ),
        (with_(user_profile={"a": [1, {"b": -(2**63) - 1}]}), RejectCode.INVALID_FIELD, None),
        (with_(user_profile={"a": 2**64 - 1, "b": -(2**63)}), None, b"e\x00h"),  # the limits
        (with_(user_profile={"n": BIG}, extra=1), RejectCode.INVALID_FIELD, None),
        (with_(user_profile={"n": BIG}, email_hash=""), RejectCode.INVALID_IDENTIFIER, None),
        (DELETE_WITH_BIG, None, b"e\x00h"),
        (with_(email_hash="12345678901234567890123"), None, b"e\x0012345678901234567890123"),
    ],
)
def test_integers_beyond_64_bits_are_never_rounded(
    line: str, code: RejectCode | None, key: bytes | None
) -> None:
    assert code_of(line) is code
    if code is None:
        accepted = CHECKER.check(line.encode())
        assert accepted is not None and accepted.key == key
    else:
        with pytest.raises(LineRejected) as caught:
            CHECKER.check(line.encode())
        if code is RejectCode.INVALID_FIELD:
            assert "an integer outside the 64-bit range" in caught.value.message


# --- U+0000, for a store that cannot hold it (PostgreSQL) -------------------

NO_NUL = CheckSettings(holds_nul=False).build()
NUL = "\x00"


@pytest.mark.parametrize(
    ("line", "code", "where"),
    [
        (with_(), None, None),
        (with_(user_profile={"a": f"x{NUL}y"}), RejectCode.INVALID_FIELD, "user_profile/a:"),
        (with_(user_profile={f"k{NUL}": 1}), RejectCode.INVALID_FIELD, "user_profile:"),
        (
            with_(user_profile={"a": [1, {"b": {f"{NUL}": None}}]}),
            RejectCode.INVALID_FIELD,
            "user_profile/a/1/b:",
        ),
        (with_(user_profile={"a": ["ok", NUL]}), RejectCode.INVALID_FIELD, "user_profile/a/1:"),
        (with_(email_hash=f"h{NUL}"), RejectCode.INVALID_IDENTIFIER, "email_hash holds"),
        (
            with_(email_hash=..., user_agent_id=NUL, user_profile={"a": NUL}),
            RejectCode.INVALID_IDENTIFIER,
            "user_agent_id holds",
        ),
        (
            with_(email_hash=..., compartment_id="c", user_account_id=f"{NUL}u"),
            RejectCode.INVALID_IDENTIFIER,
            "user_account_id holds",
        ),
        (
            with_(email_hash=..., compartment_id=f"c{NUL}", user_account_id=1),
            RejectCode.INVALID_IDENTIFIER,
            "compartment_id holds",
        ),
        # A literal backslash followed by "u0000" is no NUL.
        (with_(user_profile={"a": "\\u0000"}), None, None),
        # A DELETE's user_profile is ignored, so it is not stored either.
        (
            json.dumps({"operation": "DELETE", "email_hash": "h", "user_profile": {"a": NUL}}),
            None,
            None,
        ),
        # Its place in SPEC §3's order: after the identifier, with INVALID_FIELD.
        (with_(user_profile={"a": NUL}, extra=1), RejectCode.INVALID_FIELD, "user_profile/a:"),
        (with_(user_profile={"a": NUL}, force_replace=...), RejectCode.MISSING_FORCE_REPLACE, ""),
        (with_(user_profile={"a": NUL}, force_replace="no"), RejectCode.INVALID_FIELD, "force"),
        (with_(email_hash=NUL, user_agent_id="v"), RejectCode.MULTIPLE_IDENTIFIERS, ""),
        (with_(email_hash=NUL, force_replace=...), RejectCode.INVALID_IDENTIFIER, "email_hash"),
        # Outside the identifier and the profile, nothing is stored.
        (with_(operation=f"UPSERT{NUL}"), RejectCode.INVALID_OPERATION, ""),
        (with_(**{f"x{NUL}": 1}), RejectCode.UNKNOWN_FIELD, ""),
    ],
)
def test_a_store_without_nul_rejects_the_lines_that_would_put_it_there(
    line: str, code: RejectCode | None, where: str | None
) -> None:
    assert code_of(line, NO_NUL) is code
    if code is None:
        assert code_of(line) is None
        return
    with pytest.raises(LineRejected) as caught:
        NO_NUL.check(line.encode())
    assert where is not None and where in caught.value.message
    if "U+0000" in caught.value.message:
        assert caught.value.message.endswith("which this store cannot hold")
        assert NUL not in caught.value.message
        # A store that holds NUL accepts the line, or rejects it for a later fault.
        other = code_of(line)
        assert other is None or PRECEDENCE.index(other) > PRECEDENCE.index(code)


def test_the_nul_check_skips_lines_without_the_escape() -> None:
    line = with_(user_profile={"a": "no escape here"}).encode()
    assert b"\\u0000" not in line and NO_NUL.check(line) is not None
    assert nul_path({"a": [{"b": "x"}], "c": {"d": NUL}}, "p") == "p/c/d"
    assert nul_path({"a": 1, "b": [None, True, 2.5]}, "p") is None


def test_load_accepted() -> None:
    assert load_accepted(with_(merge_objects=True).encode()) == Command(
        "UPSERT", {"a": 1}, True, True
    )


def test_precedence_is_the_spec_table_order() -> None:
    assert [str(c) for c in PRECEDENCE] == [
        "LINE_TOO_LARGE",
        "INVALID_JSON",
        "NOT_AN_OBJECT",
        "INVALID_OPERATION",
        "MISSING_IDENTIFIER",
        "MULTIPLE_IDENTIFIERS",
        "INVALID_IDENTIFIER",
        "MISSING_FORCE_REPLACE",
        "MISSING_USER_PROFILE",
        "INVALID_FIELD",
        "UNKNOWN_FIELD",
        "PROFILE_SCHEMA_VIOLATION",
    ]


# --- the envelope schema and the classifier agree --------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["", "x", "UPSERT", "DELETE", "1000"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2)
    ),
    max_leaves=4,
)
field_names = st.sampled_from(
    [
        "operation",
        "compartment_id",
        "user_account_id",
        "email_hash",
        "user_agent_id",
        "force_replace",
        "merge_objects",
        "user_profile",
        "extra",
    ]
)
field_values = st.one_of(
    json_values, st.sampled_from(["UPSERT", "DELETE"]), st.booleans(), st.just({"k": 1})
)
envelopes = st.dictionaries(field_names, field_values, max_size=6)

ENVELOPE = SchemaValidator(schemas.load())


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(envelopes)
def test_fast_and_reference_validators_agree(obj: dict[str, Any]) -> None:
    obj = orjson.loads(orjson.dumps(obj))  # exactly what a line parses to
    assert ENVELOPE.is_valid(obj) == ENVELOPE.reference_is_valid(obj)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(envelopes, st.sampled_from([None, "9"]))
def test_schema_and_classifier_agree(obj: dict[str, Any], default: str | None) -> None:
    """The schema says no exactly when the classifier finds a fault it covers.

    The classifier also applies the identifier rules that depend on the run
    (one form, the default compartment, integer-valued floats), which the
    schema leaves to code: those are the only faults the schema may accept.
    """
    obj = orjson.loads(orjson.dumps(obj))
    fault = classify(obj, default)
    if not ENVELOPE.reference_is_valid(obj):
        assert fault is not None, "the schema rejects a line the classifier would accept"
    elif fault is not None:
        assert fault.code in (
            RejectCode.MISSING_IDENTIFIER,
            RejectCode.MULTIPLE_IDENTIFIERS,
            RejectCode.INVALID_IDENTIFIER,
        )


# --- depth (SPEC §3): user_profile is level 1, at most 100 levels ----------


def profile_of_depth(levels: int, kind: str = "[") -> bytes:
    """A user_profile of exactly `levels` levels, as JSON text."""
    inner = (
        b"[" * (levels - 1) + b"]" * (levels - 1)
        if kind == "["
        else b'{"a":' * (levels - 1) + b"1" + b"}" * (levels - 1)
    )
    return b'{"p":' + (inner or b"1") + b"}"


def deep_line(levels: int, kind: str = "[", before: bytes = b"", after: bytes = b"") -> bytes:
    return (
        b'{"operation":"UPSERT",'
        + before
        + b'"force_replace":true,"user_profile":'
        + profile_of_depth(levels, kind)
        + after
        + b"}"
    )


EMAIL = b'"email_hash":"h",'


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize(
    ("levels", "code"),
    [
        (1, None),
        (100, None),
        (101, RejectCode.INVALID_FIELD),
        (253, RejectCode.INVALID_FIELD),
        (254, RejectCode.INVALID_FIELD),  # failed the whole run before
        (1000, RejectCode.INVALID_FIELD),
        (1024, RejectCode.INVALID_FIELD),
        (1025, RejectCode.INVALID_FIELD),  # beyond what orjson reads: INVALID_JSON before
        (2000, RejectCode.INVALID_FIELD),
        (100_000, RejectCode.INVALID_FIELD),
    ],
)
def test_a_profile_deeper_than_100_levels_is_an_invalid_field(
    levels: int, kind: str, code: RejectCode | None
) -> None:
    line = deep_line(levels, kind, before=EMAIL)
    assert code_of(line) is code
    if code is not None:
        with pytest.raises(LineRejected) as caught:
            CHECKER.check(line)
        assert caught.value.message == "user_profile is nested more than 100 levels deep"
    else:
        accepted = CHECKER.check(line)
        assert accepted is not None
        orjson.dumps(load_accepted(line).profile)  # what the apply step does with it


@pytest.mark.parametrize("levels", [101, 300, 2000])
@pytest.mark.parametrize(
    ("before", "after", "code"),
    [
        # Earlier codes win over the depth ...
        (b"", b"", RejectCode.MISSING_IDENTIFIER),
        (EMAIL + b'"user_agent_id":"u",', b"", RejectCode.MULTIPLE_IDENTIFIERS),
        (b'"email_hash":"",', b"", RejectCode.INVALID_IDENTIFIER),
        (b'"email_hash":5,', b"", RejectCode.INVALID_IDENTIFIER),
        # ... later ones lose to it.
        (EMAIL, b',"extra":1', RejectCode.INVALID_FIELD),
        (EMAIL, b',"merge_objects":"yes"', RejectCode.INVALID_FIELD),
        (
            EMAIL + b'"compartment_id":12345678901234567890123,',
            b"",
            RejectCode.MULTIPLE_IDENTIFIERS,
        ),
    ],
)
def test_depth_takes_its_place_in_the_code_order(
    levels: int, before: bytes, after: bytes, code: RejectCode
) -> None:
    assert code_of(deep_line(levels, before=before, after=after)) is code


@pytest.mark.parametrize("levels", [150, 2000])
@pytest.mark.parametrize(
    ("line", "code"),
    [
        # Deep elsewhere than user_profile: the field's own rule.
        (b'{"operation":"DELETE","email_hash":"h","x":%s}', RejectCode.UNKNOWN_FIELD),
        (b'{"operation":"DELETE","email_hash":"h","force_replace":%s}', RejectCode.INVALID_FIELD),
        (b'{"operation":%s,"email_hash":"h"}', RejectCode.INVALID_OPERATION),
        (b'{"operation":"DELETE","email_hash":%s}', RejectCode.INVALID_IDENTIFIER),
        (b'{"operation":"DELETE","email_hash":"h","user_profile":%s}', RejectCode.INVALID_FIELD),
        (b"%s", RejectCode.NOT_AN_OBJECT),
        (b'{"operation":"DELETE","email_hash":"h","x":%s,}', RejectCode.INVALID_JSON),
        (b'{"operation":"DELETE","email_hash":"h","x":%s', RejectCode.INVALID_JSON),
        # A huge integer beside the depth: the standard parser meets a shallow line.
        (
            b'{"operation":"DELETE","email_hash":"h","n":123456789012345678901234,"x":%s}',
            RejectCode.UNKNOWN_FIELD,
        ),
    ],
)
def test_deep_values_outside_the_profile(levels: int, line: bytes, code: RejectCode) -> None:
    value = b"[" * levels + b"]" * levels
    assert code_of(line % value) is code


def test_a_deep_unknown_field_with_a_good_profile_is_unknown_not_too_deep() -> None:
    value = b"[" * 300 + b"]" * 300
    line = b'{"operation":"UPSERT","email_hash":"h","force_replace":true,"user_profile":{},"x":%s}'
    with pytest.raises(LineRejected) as caught:
        CHECKER.check(line % value)
    assert caught.value.code is RejectCode.UNKNOWN_FIELD


def test_a_wide_profile_with_many_brackets_is_not_deep() -> None:
    # More than 101 brackets, few levels: measured, and accepted.
    profile = {"orders": [{"id": i, "tags": [i]} for i in range(500)]}
    assert code_of(with_(user_profile=profile)) is None
