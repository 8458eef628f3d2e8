from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_import.core.codes import LineRejected, RejectCode
from profile_import.core.identifiers import (
    Identifier,
    bucket_of,
    fields_of_key,
    make_key,
    normalise_value,
    resolve,
)

pytestmark = pytest.mark.spec(section=1)


@pytest.mark.parametrize(
    ("obj", "default", "key"),
    [
        ({"compartment_id": "1000", "user_account_id": "u1"}, None, ["a", "1000", "u1"]),
        ({"compartment_id": 1000, "user_account_id": "u1"}, None, ["a", "1000", "u1"]),
        ({"compartment_id": "1000", "user_account_id": 42}, None, ["a", "1000", "42"]),
        ({"compartment_id": -7, "user_account_id": 0}, None, ["a", "-7", "0"]),
        ({"user_account_id": "u1"}, "9", ["a", "9", "u1"]),
        ({"compartment_id": "1", "user_account_id": "u1"}, "9", ["a", "1", "u1"]),
        ({"email_hash": "abc"}, None, ["e", "abc"]),
        ({"user_agent_id": "vec:1"}, None, ["u", "vec:1"]),
        ({"email_hash": "tab\there"}, None, ["e", "tab\there"]),
    ],
)
def test_resolve_gives_the_canonical_key(
    obj: dict[str, Any], default: str | None, key: list[str]
) -> None:
    assert resolve(obj, default) == make_key(*key)
    assert Identifier.from_key(resolve(obj, default)) == Identifier(key[0], tuple(key[1:]))


@pytest.mark.parametrize(
    ("obj", "default", "code"),
    [
        ({}, None, RejectCode.MISSING_IDENTIFIER),
        ({"operation": "UPSERT"}, "9", RejectCode.MISSING_IDENTIFIER),
        ({"email_hash": "h", "user_agent_id": "v"}, None, RejectCode.MULTIPLE_IDENTIFIERS),
        ({"email_hash": "", "user_agent_id": "v"}, None, RejectCode.MULTIPLE_IDENTIFIERS),
        ({"email_hash": "h", "compartment_id": "1"}, None, RejectCode.MULTIPLE_IDENTIFIERS),
        ({"user_account_id": "u", "email_hash": "h"}, "9", RejectCode.MULTIPLE_IDENTIFIERS),
        ({"email_hash": ""}, None, RejectCode.INVALID_IDENTIFIER),
        ({"email_hash": 5}, None, RejectCode.INVALID_IDENTIFIER),
        ({"email_hash": None}, None, RejectCode.INVALID_IDENTIFIER),
        ({"user_agent_id": ["x"]}, None, RejectCode.INVALID_IDENTIFIER),
        ({"user_account_id": "u9"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": "1000"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": "1000"}, "9", RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": "", "user_account_id": "u"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": 1.5, "user_account_id": "u"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": 1000.0, "user_account_id": "u"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": True, "user_account_id": "u"}, None, RejectCode.INVALID_IDENTIFIER),
        ({"compartment_id": "1", "user_account_id": {}}, None, RejectCode.INVALID_IDENTIFIER),
    ],
)
def test_resolve_rejects(obj: dict[str, Any], default: str | None, code: RejectCode) -> None:
    with pytest.raises(LineRejected) as caught:
        resolve(obj, default)
    assert caught.value.code is code


@pytest.mark.parametrize(
    ("value", "expected"),
    [("x", "x"), ("", None), (12, "12"), (True, None), (1.0, None), (None, None), ([], None)],
)
def test_normalise_value(value: Any, expected: str | None) -> None:
    assert normalise_value(value) == expected


@pytest.mark.parametrize(
    "identifier",
    [
        Identifier.account("1000", "u1"),
        Identifier.email_hash('h\n"é'),
        Identifier.email_hash("tab\there\x00\x01\x0f\x10"),
        Identifier.account("\x00", "x"),
        Identifier.user_agent_id("vec:1"),
    ],
)
def test_key_round_trip_and_fields(identifier: Identifier) -> None:
    key = identifier.key
    assert b"\t" not in key and b"\n" not in key
    assert key.count(b"\x00") == len(identifier.values)
    assert Identifier.from_key(key) == identifier
    assert resolve(identifier.fields()) == key


@given(st.sampled_from("aeu"), st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8))
def test_fields_of_a_key_are_its_identifiers(kind: str, first: str, second: str) -> None:
    """The store's fast reading of a key gives the identifier's fields, escaped
    bytes (below 0x10) and non-ASCII values included."""
    values = (first, second) if kind == "a" else (first,)
    key = Identifier(kind, values).key
    assert (
        fields_of_key(key) == Identifier.from_key(key).fields() == Identifier(kind, values).fields()
    )


def test_keys_sort_by_kind_then_values() -> None:
    keys = [
        Identifier.user_agent_id("a").key,
        Identifier.email_hash("b").key,
        Identifier.account("2", "a").key,
        Identifier.account("10", "z").key,
    ]
    assert [Identifier.from_key(k).kind for k in sorted(keys)] == ["a", "a", "e", "u"]


def test_bucket_is_stable_and_in_range() -> None:
    key = Identifier.email_hash("abc").key
    # crc32 is the contract: the same key lands in the same bucket on every machine.
    assert key == b"e\x00abc"
    assert bucket_of(key, 64) == 0x5D9597F0 % 64 == 48
    assert all(0 <= bucket_of(Identifier.email_hash(str(i)).key, 7) < 7 for i in range(200))
    assert len({bucket_of(Identifier.email_hash(str(i)).key, 8) for i in range(200)}) == 8


@given(st.lists(st.tuples(st.sampled_from("aeu"), st.text(max_size=6), st.text(max_size=6))))
def test_keys_sort_exactly_like_identifiers(identifiers: list[tuple[str, str, str]]) -> None:
    """Byte order of keys is the order of (kind, values) as strings: export's order."""
    ids = [Identifier(kind, (a, b) if kind == "a" else (a,)) for kind, a, b in identifiers]
    assert sorted(ids, key=lambda i: i.key) == sorted(ids)
    assert all(Identifier.from_key(i.key) == i for i in ids)
