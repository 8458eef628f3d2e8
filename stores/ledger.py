"""The folder store's ledger of applied inputs (SPEC §4), in segment files.

Each execution that publishes writes one small segment, `ledger/<execution>.ndjson`:
one JSON line per input fingerprint it applied. A version's manifest lists
the segments of its ledger, oldest first, so that versions share them the
way they share bucket files, and a rollback rolls the ledger back with the
content. When a version would list more than `MAX_SEGMENTS`, its commit folds
them into one segment: a store with years of nightly runs still reads a few
files, a few MB at most, to check a run's inputs (100 bytes or so an entry).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import orjson

from profile_import.core.idempotency import AppliedInput

from .files import Files

FOLDER = "ledger"
MAX_SEGMENTS = 32


def segment_path(execution_id: str) -> str:
    return f"{FOLDER}/{execution_id}.ndjson"


def encode(entries: Iterable[AppliedInput]) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "fingerprint": e.fingerprint,
                "execution_id": e.execution_id,
                "version": e.version,
                "finished_at": e.finished_at,
            }
        )
        + b"\n"
        for e in entries
    )


def read_segment(files: Files, segment: str) -> list[AppliedInput]:
    data = files.read_bytes(segment)
    return [AppliedInput(**orjson.loads(line)) for line in data.splitlines() if line.strip()]


def read(files: Files, segments: Sequence[str]) -> dict[str, AppliedInput]:
    """Every entry of a ledger; a later segment's entry wins (a re-application)."""
    entries: dict[str, AppliedInput] = {}
    for segment in segments:
        for entry in read_segment(files, segment):
            entries[entry.fingerprint] = entry
    return entries


def lookup(
    files: Files, segments: Sequence[str], fingerprints: Collection[str]
) -> dict[str, AppliedInput]:
    wanted = set(fingerprints)
    return {fp: entry for fp, entry in read(files, segments).items() if fp in wanted}


def next_segments(
    files: Files, parent_segments: Sequence[str], execution_id: str, entries: list[AppliedInput]
) -> tuple[list[str], bytes]:
    """The new version's segment list and the bytes of its one new segment.

    Past `MAX_SEGMENTS` the new segment holds the whole ledger, and is the
    only one listed.
    """
    own = segment_path(execution_id)
    if len(parent_segments) + 1 <= MAX_SEGMENTS:
        return [*parent_segments, own], encode(entries)
    merged = read(files, parent_segments)
    for entry in entries:
        merged[entry.fingerprint] = entry
    return [own], encode(sorted(merged.values(), key=lambda e: e.fingerprint))
