"""Random and mutated lines through the pipeline: the run never fails, counts add up.

A seeded generator (deterministic, bounded: 300 lines per seed) writes good
commands and mutates some of them: byte flips, truncations, deep nesting,
duplicated keys, huge and odd numbers, bad UTF-8, stray brackets, BOMs, NULs,
lone surrogates, carriage returns. Through ParseCommands + ApplyCommands:

- the run finishes, and `lines = blank + accepted + rejected`,
  `accepted = upserts + deletes`, every accepted command applied;
- the lines rejected are exactly those the line check rejects on its own, with
  the same codes and line numbers;
- the store holds exactly what a plain loop over the accepted lines gives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from profile_import.core.codes import LineRejected
from profile_import.core.commands import CheckSettings, load_accepted
from profile_import.core.fold import DELETE
from profile_import.core.merge import same_json, upsert

from ..pipeline_helpers import assert_counts_add_up, import_lines

pytestmark = [pytest.mark.spec(section=3), pytest.mark.spec(section=4)]

LINES = 300
IDENTIFIERS: list[dict[str, Any]] = [
    {"email_hash": "h1"},
    {"email_hash": "h2"},
    {"user_agent_id": "ua\u0000\t1"},
    {"compartment_id": 1000, "user_account_id": "u1"},
    {"compartment_id": "1000", "user_account_id": 2**70},
    {"user_account_id": "u2"},  # no compartment: rejected (no default in this run)
]
ODD_VALUES: list[str] = [
    "1e308",
    "-0.0",
    "5e-324",
    "1e400",
    str(2**64 - 1),
    str(2**64),
    str(-(2**63) - 1),
    "9" * 30,
    "NaN",
    r'"\ud800"',
    r'"\ud83d\ude00"',
    r'"\u0000"',
    '"\x01"',
    '"😀"',
]


def value(rnd: random.Random, depth: int = 0) -> Any:
    roll = rnd.random()
    if depth > 3 or roll < 0.5:
        return rnd.choice([None, True, 0, -1, 2.5, "x", "ÿ", "😀", 2**63 - 1])
    if roll < 0.75:
        return [value(rnd, depth + 1) for _ in range(rnd.randrange(3))]
    return {rnd.choice("abc"): value(rnd, depth + 1) for _ in range(rnd.randrange(3))}


def good_line(rnd: random.Random, number: int) -> bytes:
    # Half the lines touch a few shared users (merges); half a user of their
    # own, whose profile then survives the run and must be stored.
    ident = rnd.choice(IDENTIFIERS) if rnd.random() < 0.5 else {"email_hash": f"own-{number}"}
    if rnd.random() < 0.15:
        return json.dumps({"operation": "DELETE", **ident}).encode()
    force = rnd.random() < 0.3
    obj = {
        "operation": "UPSERT",
        **ident,
        "force_replace": force,
        "merge_objects": rnd.random() < 0.6,
        "user_profile": {rnd.choice("pqrs"): value(rnd) for _ in range(rnd.randrange(4))},
    }
    return json.dumps(obj, ensure_ascii=rnd.random() < 0.5).encode()


def nested(rnd: random.Random) -> bytes:
    levels = rnd.choice([99, 100, 101, 150, 254, 1024, 1025, 3000])
    opener, closer = rnd.choice([(b"[", b"]"), (b'{"k":', b"}")])
    return opener * levels + b"1" + closer * levels


def mutate(rnd: random.Random, line: bytes) -> bytes:
    kind = rnd.randrange(12)
    at = rnd.randrange(len(line) + 1)
    if kind == 0:  # flip a byte
        i = min(at, len(line) - 1)
        return line[:i] + bytes([rnd.randrange(256)]) + line[i + 1 :]
    if kind == 1:  # truncate
        return line[:at]
    if kind == 2:  # deep nesting in the profile
        return line.replace(
            b'"user_profile": {', b'"user_profile": {"deep": ' + nested(rnd) + b", "
        )
    if kind == 3:  # deep nesting anywhere a value may go
        return line.replace(b": ", b": " + nested(rnd) + b", ", 1).replace(b", ,", b",")
    if kind == 4:  # a duplicated key
        return line[:-1] + b', "user_profile": {"dup": 1}}'
    if kind == 5:  # an odd number or string as a value in the profile
        odd = rnd.choice(ODD_VALUES).encode()
        return line.replace(b'"user_profile": {', b'"user_profile": {"odd": ' + odd + b", ")
    if kind == 6:  # bad UTF-8
        return (
            line[:at] + rnd.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]) + line[at:]
        )
    if kind == 7:  # stray bracket or quote
        return line[:at] + rnd.choice([b"[", b"]", b"{", b"}", b'"', b"\\"]) + line[at:]
    if kind == 8:  # a BOM, a NUL, a carriage return
        return line[:at] + rnd.choice([b"\xef\xbb\xbf", b"\x00", b"\r", b"\t"]) + line[at:]
    if kind == 9:  # blank or white space
        return rnd.choice([b"", b"   ", b"\t"])
    if kind == 10:  # an identifier made odd
        odd = rnd.choice([b'"email_hash": "", ', b'"email_hash": 1.5, ', b'"x": 1, '])
        return line.replace(b"{", b"{" + odd, 1)
    return line + line  # two commands on one line


def generate(seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    lines = []
    for number in range(LINES):
        line = good_line(rnd, number)
        if rnd.random() < 0.5:
            line = mutate(rnd, line)
        lines.append(line.replace(b"\n", b" "))  # one line stays one line
    return lines


def reference(lines: list[bytes]) -> tuple[dict[int, str], dict[bytes, Any]]:
    """Each line checked on its own, then applied in a plain loop."""
    checker = CheckSettings().build()
    rejected: dict[int, str] = {}
    profiles: dict[bytes, Any] = {}
    for number, raw in enumerate(lines, 1):
        content = raw[:-1] if raw.endswith(b"\r") else raw  # the reader takes \r\n as the end
        if number == 1 and content.startswith(b"\xef\xbb\xbf"):
            content = content[3:]
        try:
            accepted = checker.check(content)
        except LineRejected as e:
            rejected[number] = str(e.code)
            continue
        if accepted is None:
            continue
        command = load_accepted(content)
        if command.operation == DELETE:
            profiles.pop(accepted.key, None)
        else:
            assert command.profile is not None
            profiles[accepted.key] = upsert(
                profiles.get(accepted.key),
                command.profile,
                force_replace=command.force_replace,
                merge_objects=command.merge_objects,
            )
    return rejected, profiles


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_lines_never_fail_the_run(tmp_path: Path, seed: int) -> None:
    lines = generate(seed)
    result = import_lines(tmp_path, lines, split_bytes=8192)
    assert_counts_add_up(result, len(lines))
    want_rejected, want_profiles = reference(lines)
    assert result.reject_codes() == want_rejected
    assert len(want_rejected) > LINES // 10  # the mutations do reach the checks
    assert result.profiles.keys() == want_profiles.keys()
    for key, profile in want_profiles.items():
        assert same_json(result.profiles[key], profile), key
