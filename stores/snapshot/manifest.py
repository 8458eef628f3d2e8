"""A snapshot store's manifests as data: file names, what a version records of
each file (`Shard`), ledger and change segments, and the checks of their lines."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from profile_import.core import records, segments
from profile_import.core.changes import ChangeRecord
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import Identifier, bucket_of

from .. import ledger

FORMAT = "profile-import/snapshot-store"
# 2: manifests record each file's lines, bytes and crc32; data files are `.kv`.
# Format 1 (bare paths to `.ndjson` files) is still read, without those checks,
# and a store becomes format 2 with its first publish by this code.
# 3: a bucket may have delta segments over its base file (`Shard.deltas`).
# Formats 1 and 2 are read, and become 3 with their next publish.
# 4: ledger segments are recorded like bucket files (lines, bytes, crc32).
# Older manifests list bare paths: such segments are read without those
# checks (`verify` says so), and recorded by the next publish, which checks
# what it can of them first (every line an entry, at least one).
FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, 4)
DEFAULT_BUCKETS = 64
META = "profile-store.json"
CURRENT = "CURRENT"
LOCK = ".lock"
NEW = "new"  # the meta's state until the store's first version is published
DATA_SUFFIX = ".kv"
DELTA_SUFFIX = ".delta.kv"
CHANGES_SUFFIX = ".changes"
# A run rewrites a bucket as a new base, rather than add a delta, once its
# deltas would hold more than this fraction of its base's bytes, or be more
# than this many segments: reading stays within ~1.25x of the base's bytes
# and a few files a bucket, and the store within ~1.25x of its profiles.
COMPACT_FRACTION = 0.25
MAX_DELTAS = 8
STATS_SUFFIX = ".stats"  # a written bucket's line count, size and crc32, until commit
LEGACY_DATA_SUFFIX = ".ndjson"
# Everything a store folder holds, so a dead first run's leftovers can be removed.
STORE_NAMES = (META, CURRENT, "versions", "data", "staging", ledger.FOLDER)
BLOCK = 1 << 20
MAX_PROBLEMS_PER_FILE = 10


def bucket_file(execution_id: str, bucket: int, *, delta: bool = False) -> str:
    suffix = DELTA_SUFFIX if delta else DATA_SUFFIX
    return f"data/{execution_id}/bucket-{bucket:05d}{suffix}"


def changes_file(execution_id: str, bucket: int) -> str:
    return f"data/{execution_id}/bucket-{bucket:05d}{CHANGES_SUFFIX}"


def change_record_lines(before: Mapping[bytes, str | None]) -> list[bytes]:
    """A change segment's lines, by key: `<key>\t<digest before, or nothing>`."""
    sep = records.SEPARATOR
    return [key + sep + (before[key] or "").encode() + b"\n" for key in sorted(before)]


def change_records(lines: Iterable[bytes], version: int) -> Iterator[ChangeRecord]:
    sep = records.SEPARATOR
    for line in lines:
        key, _, digest = line[:-1].partition(sep)
        yield ChangeRecord(version, key, digest.decode() or None)


def change_record_problem(line: bytes, previous: bytes, bucket: int, buckets: int) -> str | None:
    """What is wrong with a change segment's line (with its newline), or None:
    `<key>\t<digest before, or nothing>`, after `previous`, in `bucket`."""
    if not line.endswith(b"\n"):
        return "is cut short (no newline at its end)"
    key, sep, digest = line[:-1].partition(records.SEPARATOR)
    if not sep:
        return "is not a change record (no tab after a key)"
    try:
        Identifier.from_key(key)
    except (UnicodeDecodeError, ValueError):
        return "does not start with a profile's key"
    if digest and (len(digest) != 32 or digest.strip(b"0123456789abcdef")):
        return "holds no state digest after its key"
    if key <= previous:
        return "is out of key order"
    if bucket_of(key, buckets) != bucket:
        return f"belongs in bucket {bucket_of(key, buckets)}"
    return None


@dataclass(frozen=True)
class DeltaLimits:
    """When a run rewrites a bucket rather than add a delta segment to it."""

    fraction: float = COMPACT_FRACTION
    segments: int = MAX_DELTAS


@dataclass(frozen=True)
class Shard:
    """One bucket's base file in a version, and what it holds; with `deltas`,
    the bucket's delta segments over it, oldest first (each a `Shard` too).
    A ledger segment is recorded the same way (without deltas).

    `lines`, `bytes` and `crc32` are None only for a file recorded by its path
    alone: a format-1 bucket file, a ledger segment before format 4.
    """

    path: str
    lines: int | None = None
    bytes: int | None = None
    crc32: int | None = None
    deltas: tuple[Shard, ...] = ()

    def to_json(self) -> dict[str, Any] | str:
        if self.lines is None:
            return self.path
        value: dict[str, Any] = {
            "path": self.path,
            "lines": self.lines,
            "bytes": self.bytes,
            "crc32": self.crc32,
        }
        if self.deltas:
            value["deltas"] = [d.to_json() for d in self.deltas]
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any] | str) -> Shard:
        if isinstance(value, str):
            return cls(value)
        deltas = tuple(cls.from_json(d) for d in value.get("deltas", ()))
        return cls(value["path"], value["lines"], value["bytes"], value["crc32"], deltas)

    @property
    def base(self) -> Shard:
        """The base file alone."""
        return replace(self, deltas=()) if self.deltas else self

    @property
    def files(self) -> list[Shard]:
        """The bucket's files: its base, then its deltas oldest first."""
        return [self.base, *self.deltas]

    def compacts_with(self, delta_bytes: int, limits: DeltaLimits) -> bool:
        """Whether adding a delta of `delta_bytes` should rewrite the bucket instead."""
        if self.bytes is None:
            return True  # a format-1 base: its size unrecorded, rewrite it
        total = delta_bytes + sum(d.bytes or 0 for d in self.deltas)
        return len(self.deltas) + 1 > limits.segments or total > limits.fraction * self.bytes

    @property
    def execution(self) -> str:
        return self.path.split("/")[1]

    def mismatch(self, lines: int, size: int, crc32: int) -> str | None:
        """How a file read whole differs from this record, or None."""
        if self.lines is None:
            return None
        if lines != self.lines:
            return f"{self.path} has {lines:,} lines, its version records {self.lines:,}"
        if size != self.bytes:
            return f"{self.path} has {size:,} bytes, its version records {self.bytes:,}"
        if crc32 != self.crc32:
            return f"{self.path} has crc32 {crc32:08x}, its version records {self.crc32:08x}"
        return None


def ledger_of(manifest: dict[str, Any]) -> list[Shard]:
    """A version's ledger segments, oldest first."""
    return [Shard.from_json(segment) for segment in manifest.get("ledger", [])]


def record_of(path: str, data: bytes) -> Shard:
    """The record of a file written whole as `data`."""
    return Shard(path, data.count(b"\n"), len(data), zlib.crc32(data))


def ledger_segment(segment: Shard, data: bytes) -> tuple[list[AppliedInput], list[str]]:
    """A ledger segment's entries, from its bytes `data`, and what is wrong
    with it: unlike its record, a line that is not an entry. One recorded by
    its path alone (before format 4) must at least hold an entry, as every
    segment a commit writes does: emptied, it would forget inputs, and a run
    would apply them again."""
    problems: list[str] = []
    if not data.endswith(b"\n") and data:
        problems.append(f"{segment.path}: its last line is cut short")
    mismatch = segment.mismatch(data.count(b"\n"), len(data), zlib.crc32(data))
    if mismatch:
        problems.append(mismatch)
    entries, bad = ledger.decode(data)
    problems += [f"{segment.path} line {n}: {p}" for n, p in bad[:MAX_PROBLEMS_PER_FILE]]
    if len(bad) > MAX_PROBLEMS_PER_FILE:
        problems.append(f"{segment.path}: {len(bad) - MAX_PROBLEMS_PER_FILE:,} more bad lines")
    if segment.lines is None and not entries and not problems:
        problems.append(f"{segment.path} holds no entry (it was emptied)")
    return entries, problems


def tombstone_problem(line: bytes) -> str | None:
    """What is wrong with a delta's tombstone line, or None."""
    try:
        identifier = Identifier.from_key(segments.key_of(line))
    except (UnicodeDecodeError, ValueError):
        return "is a tombstone whose key is not an identifier's"
    if identifier.key != segments.key_of(line):
        return "is a tombstone whose key is not an identifier's"
    return None
