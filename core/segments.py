"""A bucket as a base file plus delta segments, and how they merge.

A run that changes a few profiles of a bucket writes only those: a delta
segment, the changed profiles' store lines (`records`) and a tombstone for
each deleted key, sorted by key. A tombstone is `<key>\\t\\n`: a store line
with an empty record, which no profile can be (a record is a JSON object), so
a file written before deltas existed never holds one. Reading a bucket merges
its base with its deltas, the newest segment winning for a key, and drops the
tombstones: one streaming pass in key order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence

from . import records

_TOMBSTONE_END = records.SEPARATOR + b"\n"
Pairs = Iterable[tuple[bytes, bytes]]


def tombstone(key: bytes) -> bytes:
    """The delta line that deletes `key`."""
    return key + _TOMBSTONE_END


def is_tombstone(line: bytes) -> bool:
    """Whether a store line (with its newline) is a tombstone."""
    return line.endswith(_TOMBSTONE_END)


def key_of(line: bytes) -> bytes:
    return line[: line.index(records.SEPARATOR)]


def delta_lines(changed: Iterable[bytes], deleted: Iterable[bytes]) -> list[bytes]:
    """A delta segment's lines: the changed profiles' store lines and the
    deleted keys' tombstones, in key order."""
    lines = [(key_of(line), line) for line in changed]
    lines += [(key, tombstone(key)) for key in deleted]
    lines.sort()
    return [line for _, line in lines]


def _ranked(pairs: Pairs, rank: int) -> Iterator[tuple[bytes, int, bytes]]:
    for key, value in pairs:
        yield key, rank, value


def newest(deltas: Sequence[Pairs]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of several sorted segments, oldest first, merged: for a key
    in several, the newest segment's value. Tombstones are kept."""
    if len(deltas) == 1:
        yield from deltas[0]
        return
    # Newer segments rank lower, so they come first for a key.
    streams = [_ranked(pairs, -n) for n, pairs in enumerate(deltas)]
    previous = None
    for key, _rank, value in heapq.merge(*streams, key=lambda item: item[:2]):
        if key != previous:
            previous = key
            yield key, value


def merge(base: Pairs, deltas: Sequence[Pairs]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of a bucket: its base's sorted pairs with its delta
    segments' (oldest first) over them, newest wins, in key order. The values
    are store lines or records; a tombstone (a line ending in a tab and a
    newline, or an empty record) is dropped.
    """
    if not deltas:
        yield from base
        return
    is_dead = dead
    changes = newest(deltas)
    change = next(changes, None)
    for key, value in base:
        while change is not None and change[0] < key:
            if not is_dead(change[1]):
                yield change
            change = next(changes, None)
        if change is not None and change[0] == key:
            if not is_dead(change[1]):
                yield change
            change = next(changes, None)
        else:
            yield key, value
    while change is not None:
        if not is_dead(change[1]):
            yield change
        change = next(changes, None)


def dead(value: bytes) -> bool:
    """Whether a store line or a record (`records.split`) is a tombstone's."""
    return not value or value.endswith(_TOMBSTONE_END)


def keyed(lines: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of store lines."""
    sep = records.SEPARATOR
    for line in lines:
        yield line[: line.index(sep)], line


def merge_lines(base: Iterable[bytes], deltas: Sequence[Iterable[bytes]]) -> Iterator[bytes]:
    """The store lines of a bucket: `merge` of its files' lines."""
    if not deltas:
        yield from base
        return
    for _key, line in merge(keyed(base), [keyed(d) for d in deltas]):
        yield line
