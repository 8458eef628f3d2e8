"""The folder store's ledger of applied inputs (SPEC §4), in segment files.

Each execution that publishes writes one small segment, `ledger/<execution>.ndjson`:
one JSON line per input fingerprint it applied. A version's manifest lists
the segments of its ledger, oldest first, each with its line count, size and
crc32 like a bucket file, so that versions share them the way they share
bucket files, a rollback rolls the ledger back with the content, and an
emptied, cut or lost segment is damage, never an input forgotten (and
applied again). When a version would list more than `MAX_SEGMENTS`, its
commit folds them into one segment: a store with years of nightly runs still
reads a few files, a few MB at most, to check a run's inputs (100 bytes or so
an entry).

This module knows the segments' content; reading them, and checking them
against their record, is the store's (`stores.snapshot`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import orjson

from profile_import.core.idempotency import AppliedInput

FOLDER = "ledger"
MAX_SEGMENTS = 32
_FIELDS = {"fingerprint": str, "execution_id": str, "version": int, "finished_at": str}


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


def decode(data: bytes) -> tuple[list[AppliedInput], list[tuple[int, str]]]:
    """The entries of a segment, and (line number, problem) of each line that
    is not one."""
    entries: list[AppliedInput] = []
    problems: list[tuple[int, str]] = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            problems.append((n, "is not JSON"))
            continue
        if not (
            isinstance(value, dict)
            and value.keys() == _FIELDS.keys()
            and all(type(value[k]) is t for k, t in _FIELDS.items())
        ):
            problems.append((n, "is not a ledger entry"))
            continue
        entries.append(AppliedInput(**value))
    return entries, problems


def merged(segments: Iterable[Iterable[AppliedInput]]) -> dict[str, AppliedInput]:
    """Every entry of a ledger's segments, oldest first; a later segment's
    entry wins (a re-application)."""
    entries: dict[str, AppliedInput] = {}
    for segment in segments:
        for entry in segment:
            entries[entry.fingerprint] = entry
    return entries


def lookup(
    segments: Iterable[Iterable[AppliedInput]], fingerprints: Collection[str]
) -> dict[str, AppliedInput]:
    wanted = set(fingerprints)
    return {fp: entry for fp, entry in merged(segments).items() if fp in wanted}


def folds(parent_segments: int) -> bool:
    """Whether a commit over a ledger of `parent_segments` folds it into its own
    segment (which then holds the whole ledger and is the only one listed)."""
    return parent_segments + 1 > MAX_SEGMENTS


def folded(segments: Iterable[Iterable[AppliedInput]]) -> bytes:
    """The one segment that holds a whole ledger."""
    return encode(sorted(merged(segments).values(), key=lambda e: e.fingerprint))
