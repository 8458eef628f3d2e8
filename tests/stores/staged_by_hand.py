"""A run's staging written by hand, bucket by bucket, as the pipeline writes it:
for the tests that drive a store through its interface (`begin`, the sink,
`commit`) rather than through a run."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores.base import ProfileStore, Staging

THEN, NOW = "2026-01-01T00:00:00.000Z", "2026-11-23T00:00:00.000Z"
BUCKETS = 4


def key(name: str) -> bytes:
    return Identifier.email_hash(name).key


def line(name: str, profile: dict[str, object], at: str = THEN) -> bytes:
    return records.encode(key(name), StoredProfile(profile, at, at))


def before_unknown(changed: Sequence[bytes], gone: Sequence[bytes]) -> dict[bytes, str | None]:
    """Change records for changes staged by hand: each changed profile as created."""
    return {**{records.split(x)[0]: None for x in changed}, **{k: "" for k in gone}}


def stage(
    store: ProfileStore, execution: str, lines: list[bytes], deleted: Sequence[bytes] = ()
) -> tuple[Staging, int]:
    """A run's staging of `lines` and `deleted` keys; also how many buckets it wrote."""
    staging = store.begin(execution, store.current())
    by_bucket: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for x in lines:
        by_bucket.setdefault(bucket_of(records.split(x)[0], BUCKETS), ([], []))[0].append(x)
    for k in deleted:
        by_bucket.setdefault(bucket_of(k, BUCKETS), ([], []))[1].append(k)
    for bucket, (changed, gone) in by_bucket.items():
        staging.sink.write_changes(bucket, changed, gone, before_unknown(changed, gone))
    return staging, len(by_bucket)


def emails(store: ProfileStore) -> list[str]:
    """The email hashes of the profiles `export` gives, in its order."""
    return [orjson.loads(r)["email_hash"] for r in store.export()]
