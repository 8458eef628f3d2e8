from __future__ import annotations

import pytest

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier

T = "2026-01-01T00:00:00.000Z"
GOOD = records.encode(Identifier.account("1000", "a\tb").key, StoredProfile({"x": [1]}, T, T))
KEY = Identifier.email_hash("h").key


def test_a_line_encode_writes_has_no_problem() -> None:
    assert records.problem(GOOD) is None
    assert records.split(GOOD)[0] == Identifier.account("1000", "a\tb").key


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (GOOD[:-1], "is cut short"),
        (GOOD[:-30], "is cut short"),
        (b'{"email_hash":"h"}\n', "is not a store line"),
        (KEY + b"\tgarbage{\n", "not valid JSON"),
        (KEY + b"\t[1]\n", "not a JSON object"),
        (b"x\x00h\t{}\n", "has a key that is not an identifier's"),
        (b"e\x00h\x00i\t{}\n", "has a key that is not an identifier's"),
        (b"e\x00\xff\t{}\n", "has a key that is not an identifier's"),
        (KEY + b'\t{"email_hash":"other","user_profile":{}}\n', "not its record's identifier"),
        (KEY + b'\t{"user_agent_id":"h","user_profile":{}}\n', "not its record's identifier"),
        (KEY + b'\t{"email_hash":"h","user_profile":{},"x":1}\n', "unknown field 'x'"),
        (KEY + b'\t{"email_hash":"h","user_profile":[]}\n', "no user_profile object"),
        (KEY + b'\t{"email_hash":"h","user_profile":{},"created_at":1}\n', "lacks created_at"),
    ],
)
def test_problems_of_store_lines(line: bytes, problem: str) -> None:
    found = records.problem(line)
    assert found is not None and problem in found
