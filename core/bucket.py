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
from .fold import Command, FoldResult, Outcome, apply_commands

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
        result, change = fold_key(key, stored_record, commands[key], now)
        tally[result.outcome] += 1
        tally["deletes_missing"] += result.deletes_missing
        if change is None:
            if line is not None:
                yield line  # unchanged: the very same bytes
            return
        if changes is not None:
            changes.append(change)
        if change.after is not None:
            yield change.after

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
    for key in sorted(commands):
        result, change = fold_key(key, before.get(key), commands[key], now)
        outcomes[result.outcome] += 1
        missing += result.deletes_missing
        if change is None:
            continue
        found.append(change)
        if change.after is None:
            deleted.append(key)
        else:
            changed.append(change.after)
    tally.update({outcome: count for outcome, count in outcomes.items() if count})
    tally["deletes_missing"] += missing
    return changed, deleted


def fold_key(
    key: bytes, record: bytes | None, commands: Iterable[Command], now: str
) -> tuple[FoldResult, Change | None]:
    """One touched identifier's fold onto its stored record (None: absent):
    the result, and the change it makes (None: unchanged, or absent before
    and after)."""
    stored = None if record is None else records.decode_record(record)
    result = apply_commands(stored, commands, now)
    kind = _KINDS.get(result.outcome)
    if kind is None:
        return result, None
    # A fold never changes the stored profile it starts from (`merge`).
    state = None if stored is None else profile_state_digest(stored.profile, stored.created_at)
    after = None if result.stored is None else records.encode(key, result.stored)
    return result, Change(key, kind, record, after, state)
