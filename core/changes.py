"""Changes (SPEC §6): what a run changed, and what changed since a version.

A run's change is one per profile it created, updated or deleted (`Change`,
from the fold's outcome). A store keeps, for each version it publishes, one
change record per profile that version changed: the profile's key and a
digest of its state before (`state_digest`; None when it was absent). That
is all `changes --since V` needs, whatever the store's size: the records
after `V` name the profiles that may differ, the oldest record of each gives
its state at `V`, and the store's current state of only those profiles says
how it stands now (`net_change`).

A change as written (NDJSON) is `"change"`, `"version"`, the identifier
fields, then for all but a deletion `user_profile`, `created_at` and
`last_modified_at`: the export record with two fields in front
(`change_line`), spliced as bytes, never parsed again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from .identifiers import Identifier

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
KINDS = (CREATED, UPDATED, DELETED)


class Change(NamedTuple):
    """One profile a run changed: its key, the kind of change, its export
    record before the run (None: absent) and its store line after (None:
    deleted)."""

    key: bytes
    kind: str
    before: bytes | None
    after: bytes | None
    # `before`'s state digest (`state_digest`; None: absent), from the record
    # the fold parsed.
    before_state: str | None


def state_digest(record: bytes) -> str:
    """What `changes --since` compares of a profile: its `user_profile` (object
    key order aside, as JSON has it) and `created_at`; `last_modified_at` moves
    with any write, so a profile changed and changed back compares equal."""
    obj = orjson.loads(record)
    return profile_state_digest(obj["user_profile"], obj["created_at"])


def profile_state_digest(profile: Any, created_at: str) -> str:
    """`state_digest` of a record already parsed."""
    state = orjson.dumps([profile, created_at], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(state, digest_size=16).hexdigest()


def before_digests(changes: Iterable[Change]) -> dict[bytes, str | None]:
    """Each changed key's state digest before the run (None: it was absent)."""
    return {c.key: c.before_state for c in changes}


def net_change(before: str | None, now: bytes | None) -> str | None:
    """The change between a profile's state at a version (its digest, None:
    absent) and its export record now (None: absent); None for no change."""
    if before is None:
        return None if now is None else CREATED
    if now is None:
        return DELETED
    return None if state_digest(now) == before else UPDATED


def change_line(kind: str, version: int | None, key: bytes, record: bytes | None) -> bytes:
    """One change as NDJSON (with its newline): `record` is the profile's export
    record now, None for a deletion (the identifier fields alone)."""
    head = b'{"change":"' + kind.encode() + b'","version":' + orjson.dumps(version) + b","
    if record is None:
        record = orjson.dumps(Identifier.from_key(key).fields())
    return head + record[1:] + b"\n"


class ChangeRecord(NamedTuple):
    """What a store keeps of one profile a version changed."""

    version: int
    key: bytes
    before: str | None


class SinceState(NamedTuple):
    """Each profile changed after a version: its state digest at that version
    (the oldest record's `before`) and the last version that changed it."""

    before: str | None
    last_version: int


def fold_records(records: Iterable[ChangeRecord]) -> dict[bytes, SinceState]:
    """The change records after a version, oldest version first, folded per key."""
    found: dict[bytes, SinceState] = {}
    for record in records:
        seen = found.get(record.key)
        before = record.before if seen is None else seen.before
        found[record.key] = SinceState(before, record.version)
    return found


def net_changes(
    changed: dict[bytes, SinceState], now: dict[bytes, bytes]
) -> Iterator[tuple[str, int, bytes, bytes | None]]:
    """(kind, version, key, record now) of each profile whose state differs
    between the version and now, by key (`export`'s order)."""
    for key in sorted(changed):
        state = changed[key]
        record = now.get(key)
        kind = net_change(state.before, record)
        if kind is not None:
            yield kind, state.last_version, key, record
