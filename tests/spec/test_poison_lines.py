"""One bad line never fails the run (SPEC §3), through the real pipeline.

Every kind of poison line sits between good lines of its own user and of
bystanders, all in one import through ParseCommands + ApplyCommands. Each
test then checks one kind: the poison line is rejected with its line number
and code, or applied exactly, and the good lines around it are applied.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from profile_import.core.codes import RejectCode
from profile_import.core.identifiers import Identifier

from ..pipeline_helpers import Imported, assert_counts_add_up, import_lines

pytestmark = pytest.mark.spec(section=3)

BIG = 2**70
Check = Callable[[dict[str, Any]], bool]


def command(ident: str, profile: str, *, merge: bool = True) -> bytes:
    """An UPSERT of `ident` (the JSON text of its identifier fields) with raw profile text."""
    flags = '"force_replace":false,"merge_objects":true' if merge else '"force_replace":true'
    return f'{{"operation":"UPSERT",{ident},{flags},"user_profile":{profile}}}'.encode()


def email(name: str) -> str:
    return f'"email_hash":{json.dumps(name)}'


def nested(levels: int, kind: str) -> str:
    """A profile of exactly `levels` levels (SPEC §3 counting)."""
    inner = "[" * (levels - 1) + "]" * (levels - 1) if kind == "[" else '{"a":' * (levels - 1)
    inner += "" if kind == "[" else "1" + "}" * (levels - 1)
    return '{"p":' + (inner or "1") + "}"


# name -> (identifier text, poison line, expected code or a check of the profile after)
CASES: dict[str, tuple[str, bytes, RejectCode | Check]] = {}


def case(name: str, poison: bytes | str, expect: RejectCode | Check, ident: str = "") -> None:
    ident = ident or email(name)
    line = poison.encode() if isinstance(poison, str) else poison
    CASES[name] = (ident, line.replace(b"IDENT", ident.encode()), expect)


def has(**values: Any) -> Check:
    return lambda p: all(p.get(k) == v and type(p.get(k)) is type(v) for k, v in values.items())


# Depth: 254 to 1000 levels failed the run, 1025 were INVALID_JSON.
for levels in (254, 1000, 2000):
    for kind in "[{":
        case(
            f"deep-{levels}-{kind}",
            command("IDENT", nested(levels, kind)),
            RejectCode.INVALID_FIELD,
        )
case("deep-100", command("IDENT", nested(100, "{")), lambda p: p["p"]["a"] is not None)
# Size: the largest line allowed, of small numbers; one byte over.
HUGE = 1 << 20
numbers = ",".join(["7"] * ((HUGE - 200) // 2))
case("huge-array", command("IDENT", f'{{"a":[{numbers}]}}'), lambda p: len(p["a"]) > 500_000)
case("too-large", command("IDENT", f'{{"a":[{numbers},{numbers}]}}'), RejectCode.LINE_TOO_LARGE)
# Numbers.
case("max-double", command("IDENT", '{"n":1e308,"m":-1.7976931348623157e308}'), has(n=1e308))
case("negative-zero", command("IDENT", '{"z":-0.0}'), lambda p: math.copysign(1, p["z"]) < 0)
case("subnormal", command("IDENT", '{"s":5e-324,"u":1e-400}'), has(s=5e-324, u=0.0))
case("64-bit-limits", command("IDENT", f'{{"u":{2**64 - 1},"i":{-(2**63)}}}'), has(u=2**64 - 1))
case("beyond-u64", command("IDENT", f'{{"n":{2**64}}}'), RejectCode.INVALID_FIELD)
case("beyond-i64", command("IDENT", f'{{"n":{-(2**63) - 1}}}'), RejectCode.INVALID_FIELD)
case("beyond-double", command("IDENT", '{"n":1e400}'), RejectCode.INVALID_JSON)
case("nan", command("IDENT", '{"n":NaN}'), RejectCode.INVALID_JSON)
case(
    "big-integer-identifier",
    command("IDENT", '{"n":1}'),
    has(n=1),
    ident=f'"compartment_id":{BIG},"user_account_id":1',
)
# Strings.
case("lone-surrogate", command("IDENT", r'{"s":"\ud800"}'), RejectCode.INVALID_JSON)
case(
    "lone-surrogate-and-long-digits",  # the digits send the line to the standard parser too
    command("IDENT", r'{"s":"\udc00","n":' + "9" * 25 + "}"),
    RejectCode.INVALID_JSON,
)
case("lone-surrogate-key", command("IDENT", r'{"\ud800":1}'), RejectCode.INVALID_JSON)
case(
    "nul-and-controls",
    command("IDENT", r'{"\u0000k\t":"\u0000\u0001\u001f\n"}'),
    has(**{"\x00k\t": "\x00\x01\x1f\n"}),
)
case(
    "controls-in-identifier",
    command("IDENT", '{"n":1}'),
    has(n=1),
    ident=r'"user_agent_id":"ua\u0000\t\n\u0001\u001f\u007f"',
)
case("raw-control-character", command("IDENT", '{"s":"a\x01b"}'), RejectCode.INVALID_JSON)
case("very-long-key", command("IDENT", '{"' + "k" * 300_000 + '":1}'), has(**{"k" * 300_000: 1}))
case("non-bmp", command("IDENT", '{"s":"😀\\ud83d\\ude00"}'), has(s="😀😀"))
case("non-bmp-identifier", command("IDENT", '{"n":2}'), has(n=2), ident=email("😀-\U0010ffff"))
case(
    "identifier-like-keys",
    command("IDENT", '{"email_hash":"other","operation":"DELETE","user_profile":{"x":1}}'),
    has(email_hash="other", operation="DELETE", user_profile={"x": 1}),
)
case("duplicate-keys", command("IDENT", '{"d":1,"d":{"e":2}}'), has(d={"e": 2}))
case(
    "invalid-utf8",
    command("IDENT", '{"s":"X"}').replace(b"X", b"\xff\xfe"),
    RejectCode.INVALID_JSON,
)
case(
    "utf8-surrogate",
    command("IDENT", '{"s":"X"}').replace(b"X", b"\xed\xa0\x80"),
    RejectCode.INVALID_JSON,
)
# Line structure.
case("bom-mid-file", b"\xef\xbb\xbf" + command("IDENT", "{}"), RejectCode.INVALID_JSON)
case(
    "lone-cr", command("IDENT", '{"a":1}') + b"\r" + command("IDENT", "{}"), RejectCode.INVALID_JSON
)
case("crlf", command("IDENT", '{"crlf":1}') + b"\r", has(crlf=1))  # the \n follows

MERGES, ARRAY = 300, 2_000
MERGED = Identifier.email_hash("many-merges")


def lines_of_the_import() -> tuple[list[bytes], dict[str, int]]:
    """The import, and the line number of each case's poison line."""
    lines = [command(email("bystander"), '{"first":1}', merge=False)]
    where: dict[str, int] = {}
    for name, (ident, poison, _) in CASES.items():
        lines.append(command(ident, '{"before":1}', merge=False))
        lines.append(poison)
        where[name] = len(lines)
        lines.append(command(ident, '{"after":1}'))
    # Size after many merges: one profile grows by 300 deep merges in one run.
    array = "[" + ",".join(["1"] * ARRAY) + "]"
    lines += [command(email("many-merges"), f'{{"a":{array}}}') for _ in range(MERGES)]
    lines.append(command(email("bystander"), '{"last":1}'))
    return lines, where


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Imported, dict[str, int]]:
    lines, where = lines_of_the_import()
    result = import_lines(tmp_path_factory.mktemp("poison"), lines, split_bytes=4 << 20)
    assert_counts_add_up(result, len(lines))
    return result, where


def identifier_of(ident_text: str) -> Identifier:
    fields = json.loads("{" + ident_text + "}")  # integers exact
    if "email_hash" in fields:
        return Identifier.email_hash(fields["email_hash"])
    if "user_agent_id" in fields:
        return Identifier.user_agent_id(fields["user_agent_id"])
    return Identifier.account(str(fields["compartment_id"]), str(fields["user_account_id"]))


@pytest.mark.parametrize("name", list(CASES))
def test_a_poison_line_is_rejected_or_applied_and_the_others_are_applied(
    imported: tuple[Imported, dict[str, int]], name: str
) -> None:
    result, where = imported
    ident, _, expect = CASES[name]
    profile = result.profile(identifier_of(ident))
    assert profile is not None
    # The good lines of the same user, before and after it, are applied.
    assert profile["before"] == 1 and profile["after"] == 1
    codes = result.reject_codes()
    if isinstance(expect, RejectCode):
        assert codes.get(where[name]) == expect
        assert set(profile) == {"before", "after"}
    else:
        assert where[name] not in codes, codes.get(where[name])
        assert expect(profile), str(profile)[:300]


def test_the_bystanders_and_the_rejects_are_all_there(
    imported: tuple[Imported, dict[str, int]],
) -> None:
    result, where = imported
    assert result.profile(Identifier.email_hash("bystander")) == {"first": 1, "last": 1}
    expected = {where[n]: str(e) for n, (_, _, e) in CASES.items() if isinstance(e, RejectCode)}
    assert result.reject_codes() == expected


def test_many_deep_merges_onto_one_profile(imported: tuple[Imported, dict[str, int]]) -> None:
    result, _ = imported
    profile = result.profile(MERGED)
    assert profile is not None and len(profile["a"]) == MERGES * ARRAY


def test_the_line_check_and_the_apply_step_agree_on_every_case(tmp_path: Path) -> None:
    """Every line the check accepts, the apply step parses and the store encodes."""
    from profile_import.core import records
    from profile_import.core.codes import LineRejected
    from profile_import.core.commands import CheckSettings, load_accepted
    from profile_import.core.fold import apply_commands

    checker = CheckSettings().build()
    for name, (_, poison, expect) in CASES.items():
        for line in poison.split(b"\r\n"):
            try:
                accepted = checker.check(line)
            except LineRejected as rejected:
                assert isinstance(expect, RejectCode), (name, rejected)
                continue
            assert accepted is not None
            stored = apply_commands(None, [load_accepted(line)], "t").stored
            assert stored is not None
            records.encode(accepted.key, stored)
