from __future__ import annotations

from collections import Counter

import orjson
import pytest

from profile_import.core import records
from profile_import.core.bucket import apply_to_bucket
from profile_import.core.fold import DELETE, Command, StoredProfile
from profile_import.core.identifiers import Identifier

NOW, THEN = "2026-11-23T00:00:00.000Z", "2026-01-01T00:00:00.000Z"


def key(name: str) -> bytes:
    return Identifier.email_hash(name).key


def line(name: str, profile: dict[str, object]) -> bytes:
    return records.encode(key(name), StoredProfile(profile, THEN, THEN))


def up(profile: dict[str, object]) -> Command:
    return Command("UPSERT", profile, False, False)


def test_record_encoding_round_trip() -> None:
    encoded = line("h", {"a": [1, {"b": None}]})
    k, record = records.split(encoded)
    assert k == key("h") and encoded.endswith(b"\n")
    assert orjson.loads(record) == {
        "email_hash": "h",
        "user_profile": {"a": [1, {"b": None}]},
        "created_at": THEN,
        "last_modified_at": THEN,
    }
    assert records.decode_record(record) == StoredProfile({"a": [1, {"b": None}]}, THEN, THEN)


def test_split_rejects_a_line_without_key() -> None:
    with pytest.raises(ValueError, match="not a store line"):
        records.split(b'{"a": 1}\n')


def test_apply_to_bucket_merges_in_key_order_and_reuses_untouched_bytes() -> None:
    stored = [line(n, {"v": n}) for n in ("b", "d", "f", "h")]
    commands = {
        key("a"): [up({"v": "new"})],  # before every stored key
        key("d"): [up({"w": 1})],  # updated
        key("e"): [Command(DELETE)],  # delete of a missing profile
        key("f"): [Command(DELETE)],  # deleted
        key("h"): [up({"v": "h"})],  # unchanged
        key("z"): [up({"v": "z"}), Command(DELETE)],  # created then deleted: absent
    }
    tally: Counter[str] = Counter()
    out = list(apply_to_bucket(iter(stored), commands, NOW, tally))
    keys = [records.split(x)[0] for x in out]
    assert keys == [key("a"), key("b"), key("d"), key("h")]
    assert out[1] is stored[0] and out[3] is stored[3]  # untouched, unchanged: same bytes
    assert records.decode_record(records.split(out[2])[1]) == StoredProfile(
        {"v": "d", "w": 1}, THEN, NOW
    )
    assert tally == Counter(
        {
            "created": 1,
            "updated": 1,
            "deleted": 1,
            "unchanged": 1,
            "absent": 2,
            "deletes_missing": 1,
        }
    )


def test_apply_to_an_empty_bucket() -> None:
    tally: Counter[str] = Counter()
    out = list(apply_to_bucket([], {key("b"): [up({})], key("a"): [up({"x": 1})]}, NOW, tally))
    assert [records.split(x)[0] for x in out] == [key("a"), key("b")]
    assert tally["created"] == 2
