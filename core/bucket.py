"""Applying a run's commands to one bucket of the store.

A bucket's stored lines come sorted by key; so do the keys the run touches.
One merge pass applies each touched identifier's commands (`fold`) and yields
the bucket's new lines in key order: an untouched or unchanged profile's line
is passed on as the very same bytes, without parsing or re-encoding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from . import records
from .changes import CREATED, DELETED, UPDATED, Change, profile_state_digest
from .fold import Command, Outcome, apply_commands

_KINDS = {Outcome.CREATED: CREATED, Outcome.UPDATED: UPDATED, Outcome.DELETED: DELETED}


def apply_to_bucket(
    stored_lines: Iterable[bytes],
    commands: Mapping[bytes, Iterable[Command]],
    now: str,
    tally: Counter[str],
    changes: list[Change] | None = None,
) -> Iterator[bytes]:
    """The bucket's new store lines. Counts outcomes into `tally` as it goes,
    and adds to `changes`, when given, each profile created, updated or
    deleted (SPEC §6), in key order.

    `commands` maps each touched key to its commands in input order (each
    iterated once, so they may be parsed lazily).
    """
    touched = sorted(commands)
    i = 0

    def apply(key: bytes, stored_record: bytes | None, line: bytes | None) -> Iterator[bytes]:
        stored = records.decode_record(stored_record) if stored_record is not None else None
        result = apply_commands(stored, commands[key], now)
        tally[result.outcome] += 1
        tally["deletes_missing"] += result.deletes_missing
        if result.outcome is Outcome.UNCHANGED and line is not None:
            yield line
            return
        new = None if result.stored is None else records.encode(key, result.stored)
        kind = _KINDS.get(result.outcome)
        if changes is not None and kind is not None:
            changes.append(Change(key, kind, stored_record, new))
        if new is not None:
            yield new

    for line in stored_lines:
        key, record = records.split(line)
        while i < len(touched) and touched[i] < key:
            yield from apply(touched[i], None, None)
            i += 1
        if i < len(touched) and touched[i] == key:
            yield from apply(key, record, line)
            i += 1
        else:
            yield line
    for key in touched[i:]:
        yield from apply(key, None, None)


def bucket_changes(
    stored_lines: Iterable[bytes],
    commands: Mapping[bytes, Iterable[Command]],
    now: str,
    tally: Counter[str],
    changes: list[Change] | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """What a run changes in a bucket, given only the stored lines of the keys it
    touches: the new lines of changed profiles, and the keys of deleted ones,
    in key order. Same outcomes, counts and `changes` as `apply_to_bucket` on
    the whole bucket (one loop, where that one merges every stored line in).
    """
    found: list[Change] = [] if changes is None else changes
    before = dict(map(records.split, stored_lines))
    changed: list[bytes] = []
    deleted: list[bytes] = []
    outcomes = dict.fromkeys(Outcome, 0)
    missing = 0
    decode, encode = records.decode_record, records.encode
    for key in sorted(commands):
        record = before.get(key)
        stored = None if record is None else decode(record)
        result = apply_commands(stored, commands[key], now)
        outcomes[result.outcome] += 1
        missing += result.deletes_missing
        kind = _KINDS.get(result.outcome)
        if kind is None:
            continue  # unchanged, or absent before and after
        # Folds never change the stored profile they start from (`merge`).
        state = None if stored is None else profile_state_digest(stored.profile, stored.created_at)
        if result.stored is None:
            deleted.append(key)
            found.append(Change(key, kind, record, None, state))
        else:
            line = encode(key, result.stored)
            changed.append(line)
            found.append(Change(key, kind, record, line, state))
    tally.update({outcome: count for outcome, count in outcomes.items() if count})
    tally["deletes_missing"] += missing
    return changed, deleted
