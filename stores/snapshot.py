"""The embedded default store: versioned snapshots in a folder.

Layout of a store folder:

    profile-store.json          what this folder is: format, bucket count
    CURRENT                     the published version number (replaced atomically)
    versions/00000007.json      one manifest per version: its buckets' files
                                and its ledger's segments (each with its line
                                count, size and crc32), its profile count
    data/<execution>/bucket-00042.kv
                                a bucket's base, written whole: store lines
                                (`core.records`: `<key>\t<export record>`)
                                sorted by key; until the commit records them,
                                a `.stats` file beside each: lines, bytes, crc32
    data/<execution>/bucket-00042.delta.kv
                                a delta segment: what a run changed in a bucket
                                (`core.segments`: changed lines, tombstones)
    data/<execution>/bucket-00042.changes
                                a change segment: the change records of the
                                profiles a version changed in a bucket, by key
                                (`<key>\t<digest of the state before>`, the
                                digest empty for a profile created; SPEC §6)
    ledger/<execution>.ndjson   the input fingerprints an execution applied
                                (see `ledger`)
    staging/<execution>/        a run's scratch space (rejects, progress)
    .lock                       held by the run in progress

Profiles are spread over a fixed number of buckets by a hash of their key. A
version's bucket is a base file and an ordered list of delta segments over it;
a run writes one delta segment per bucket its commands touch, holding only
the profiles it changed, so a run writes on the order of its input, not of the
store. Once a bucket's deltas grow past a fraction of its base (or past a
number of segments), the run rewrites that bucket as a new base instead
(compaction); `compact` does it for every bucket as a version of its own.
Untouched buckets, bases and deltas alike, are shared between versions.
Publishing a version is writing its manifest, then replacing `CURRENT` with
a rename: a run that fails or is killed before that leaves the store exactly
as it was. Old versions stay until `prune`, so `rollback` can publish any
kept one again.

Published versions are those up to `CURRENT`: a manifest above it was left by
a run killed during its publish, is never listed, and is removed by the next
run. A new store is marked `"state": "new"` in profile-store.json until its
first version is published (the last step of that publish): what a failed or
killed first run leaves is not a store, and the next run starts it afresh.

Each version's manifest lists its change segments (`changes`; empty for a
compaction, absent for a version published before change records were kept):
they go with the version, so `prune` drops them with it, and `changes --since
V` reads the segments of the versions after `V` and the current state of only
the profiles they name. A rollback records as its changes every profile
changed by the versions it undoes, so a consumer following the feed receives
it like any run.

Damage is never read as data: each manifest records what each bucket file
and each ledger segment holds, and every read checks it (the size before
anything is read, the line count and crc32 once a file has been read to its
end). `verify` checks a whole version line by line, its ledger and change
segments included, and that `CURRENT` names a version that is there.
"""

from __future__ import annotations

import heapq
import io
import json
import mmap
import os
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

from profile_import.core import clock, records, segments
from profile_import.core.changes import ChangeRecord, state_digest
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.core.locations import Location, parse

from . import ledger, sorted_files
from .base import (
    BucketSink,
    BucketSource,
    Capabilities,
    ChangedSince,
    ProfileStore,
    Staging,
    StoreError,
    Verification,
    Version,
)
from .failpoints import AFTER_POINTER, BEFORE_POINTER, BUCKET_WRITTEN, DATA_WRITTEN, failpoint
from .files import Files, PointerMoved
from .folders import open_files

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
_READABLE_FORMATS = (1, 2, 3, 4)
DEFAULT_BUCKETS = 64
_META = "profile-store.json"
_CURRENT = "CURRENT"
_LOCK = ".lock"
_NEW = "new"  # the meta's state until the store's first version is published
_DATA_SUFFIX = ".kv"
_DELTA_SUFFIX = ".delta.kv"
_CHANGES_SUFFIX = ".changes"
# A run rewrites a bucket as a new base, rather than add a delta, once its
# deltas would hold more than this fraction of its base's bytes, or be more
# than this many segments: reading stays within ~1.25x of the base's bytes
# and a few files a bucket, and the store within ~1.25x of its profiles.
COMPACT_FRACTION = 0.25
MAX_DELTAS = 8
_STATS_SUFFIX = ".stats"  # a written bucket's line count, size and crc32, until commit
_LEGACY_DATA_SUFFIX = ".ndjson"
# Everything a store folder holds, so a dead first run's leftovers can be removed.
_STORE_NAMES = (_META, _CURRENT, "versions", "data", "staging", ledger.FOLDER)
_BLOCK = 1 << 20
_MAX_PROBLEMS_PER_FILE = 10


def _bucket_file(execution_id: str, bucket: int, *, delta: bool = False) -> str:
    suffix = _DELTA_SUFFIX if delta else _DATA_SUFFIX
    return f"data/{execution_id}/bucket-{bucket:05d}{suffix}"


def _changes_file(execution_id: str, bucket: int) -> str:
    return f"data/{execution_id}/bucket-{bucket:05d}{_CHANGES_SUFFIX}"


def _change_record_lines(before: Mapping[bytes, str | None]) -> list[bytes]:
    """A change segment's lines, by key: `<key>\t<digest before, or nothing>`."""
    sep = records.SEPARATOR
    return [key + sep + (before[key] or "").encode() + b"\n" for key in sorted(before)]


def _change_records(lines: Iterable[bytes], version: int) -> Iterator[ChangeRecord]:
    sep = records.SEPARATOR
    for line in lines:
        key, _, digest = line[:-1].partition(sep)
        yield ChangeRecord(version, key, digest.decode() or None)


def _change_record_problem(line: bytes, previous: bytes, bucket: int, buckets: int) -> str | None:
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

    def compacts_with(self, delta_bytes: int) -> bool:
        """Whether adding a delta of `delta_bytes` should rewrite the bucket instead."""
        if self.bytes is None:
            return True  # a format-1 base: its size unrecorded, rewrite it
        total = delta_bytes + sum(d.bytes or 0 for d in self.deltas)
        return len(self.deltas) + 1 > MAX_DELTAS or total > COMPACT_FRACTION * self.bytes

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


class _Summing(io.RawIOBase):
    """A file that sums what passes through it: its size, crc32 and last byte.

    Wrapped in a buffered reader or writer, it sees one call per block (1 MiB),
    not one per line: checking a file costs a crc32 over its blocks (~3 GB/s).
    """

    def __init__(self, raw: Any, *, writing: bool) -> None:
        super().__init__()
        self._raw = raw
        self._writing = writing
        self.bytes = 0
        self.crc32 = 0
        self.last = b"\n"

    def readable(self) -> bool:
        return not self._writing

    def writable(self) -> bool:
        return self._writing

    def _sum(self, data: memoryview) -> None:
        if data:
            self.bytes += len(data)
            self.crc32 = zlib.crc32(data, self.crc32)
            self.last = bytes(data[-1:])

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer) or 0
        self._sum(memoryview(buffer)[:n])
        return n

    def write(self, data: Any) -> int:
        n = self._raw.write(data) or 0
        self._sum(memoryview(data)[:n])
        return n


def _damaged(url: str, problem: str, *, verify: bool = True) -> StoreError:
    hint = f" (`profile-import verify --store {url}` lists it all)" if verify else ""
    return StoreError(f"store {url} is damaged: {problem}{hint}")


def _read_checked(files: Files, url: str, shard: Shard) -> Iterator[bytes]:
    """The lines of a bucket file; read to its end, checked against `shard`."""
    try:
        raw = files.open_read(shard.path)
    except FileNotFoundError as e:
        raise _damaged(url, f"{shard.path} is missing") from e
    lines = 0
    with raw:
        summing = _Summing(raw, writing=False)
        for line in io.BufferedReader(summing, _BLOCK):
            lines += 1
            yield line
    if summing.last != b"\n":
        raise _damaged(url, f"{shard.path}: its last line is cut short")
    problem = shard.mismatch(lines, summing.bytes, summing.crc32)
    if problem:
        raise _damaged(url, problem)


def _read_keyed(files: Files, url: str, shard: Shard) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of a bucket file's lines, checked as `_read_checked`; a line
    that is not a store line is damage (named once the file is read on to its
    end, where a difference from its record is named first)."""
    lines = _read_checked(files, url, shard)
    sep = records.SEPARATOR
    for n, line in enumerate(lines, 1):
        end = line.find(sep)
        if end < 0:
            for _ in lines:
                pass
            raise _damaged(url, f"{shard.path} line {n} is not a store line")
        yield line[:end], line


def _read_bucket(files: Files, url: str, shard: Shard) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of a bucket's profiles: its base and deltas merged."""
    base = _read_keyed(files, url, shard.base)
    return segments.merge(base, [_read_keyed(files, url, d) for d in shard.deltas])


def _ledger_of(manifest: dict[str, Any]) -> list[Shard]:
    """A version's ledger segments, oldest first."""
    return [Shard.from_json(segment) for segment in manifest.get("ledger", [])]


def _recorded(path: str, data: bytes) -> Shard:
    """The record of a file written whole as `data`."""
    return Shard(path, data.count(b"\n"), len(data), zlib.crc32(data))


def _ledger_segment(segment: Shard, data: bytes) -> tuple[list[AppliedInput], list[str]]:
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
    problems += [f"{segment.path} line {n}: {p}" for n, p in bad[:_MAX_PROBLEMS_PER_FILE]]
    if len(bad) > _MAX_PROBLEMS_PER_FILE:
        problems.append(f"{segment.path}: {len(bad) - _MAX_PROBLEMS_PER_FILE:,} more bad lines")
    if segment.lines is None and not entries and not problems:
        problems.append(f"{segment.path} holds no entry (it was emptied)")
    return entries, problems


class SnapshotBucketSource(BucketSource):
    """Reads the buckets of one version: each bucket's base and delta segments,
    merged. A file read to its end is checked (lines, size, crc32): a damaged
    one raises `StoreError` there.

    A run reads only the profiles its commands touch (`read_keys`) and its sink
    writes only what changed (`write_changes`): a delta segment."""

    touched_only = True

    def __init__(self, files: Files, shards: list[Shard | None], url: str | None = None) -> None:
        self.files = files
        self.url = url or files.url
        self.shards = shards

    def read_keyed(self, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, store line) of the profiles of `bucket`, in key order."""
        shard = self.shards[bucket]
        if shard is not None:
            yield from _read_bucket(self.files, self.url, shard)

    def read_bucket(self, bucket: int) -> Iterator[bytes]:
        for _key, line in self.read_keyed(bucket):
            yield line

    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        shard = self.shards[bucket]
        if shard is None or not keys:
            return
        base = self._find(shard.base, keys)
        for _key, line in segments.merge(base, [self._find(d, keys) for d in shard.deltas]):
            yield line

    def _find(self, file: Shard, keys: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(key, line) of each of `keys` (sorted, distinct) that `file` holds.

        Sparse keys in a local file are searched for in the file mapped in
        memory (`sorted_files.find_mapped`): a 10,000-line import onto a
        million profiles then reads a few pages around each key instead of
        the whole store. Its lines
        are still checked one by one (a line that is not a store line is
        damage) and the file's size against its record; the whole file's
        crc32 is checked by every read that reads it whole (export, get,
        verify, compaction). Dense keys, and files in a bucket (where every
        seek would be a request), are read on to their end and checked.
        """
        size = file.bytes
        if not self.files.is_local or size is None or len(keys) * sorted_files.DENSE_BYTES > size:
            wanted = frozenset(keys)
            return [kl for kl in _read_keyed(self.files, self.url, file) if kl[0] in wanted]
        sep = records.SEPARATOR
        try:
            with self.files.open_read(file.path) as raw:
                actual = os.fstat(raw.fileno()).st_size
                if actual != size:
                    raise _damaged(self.url, f"{file.path} holds {actual} bytes, not {size}")
                if not size:
                    return []
                # Mapped: only the pages the search looks at are read.
                with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    found = sorted_files.find_mapped(data, keys)
                    return [(key, key + sep + record + b"\n") for key, record in found]
        except FileNotFoundError as e:
            raise _damaged(self.url, f"{file.path} is missing") from e
        except ValueError as e:  # a line without a key: not a store line
            raise _damaged(self.url, f"{file.path}: {e}") from e


class SnapshotBucketSink(BucketSink):
    """Writes a bucket's new base file, or a delta segment over its parent's
    files, and beside it what it holds (lines, bytes, crc32), summed while
    writing, for the commit to record in the manifest."""

    def __init__(
        self,
        files: Files,
        execution_id: str,
        parent: list[Shard | None] | None = None,
        url: str | None = None,
    ) -> None:
        self.files = files
        self.execution_id = execution_id
        self.parent = parent
        self.url = url or files.url

    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        # The change records first: the bucket's own files, written last,
        # are what the commit counts, so a bucket counted has both.
        path = _changes_file(self.execution_id, bucket)
        if before:
            self.files.makedirs(os.path.dirname(path))
            self._write_file(path, _change_record_lines(before))
        else:  # a retried bundle that now changes nothing (it cannot, but never a stale file)
            with suppress(FileNotFoundError):
                self.files.remove(path)
        delta = segments.delta_lines(lines, deleted)
        stored = self.parent[bucket] if self.parent is not None else None
        if stored is None:
            # Nothing stored: the changes are the whole bucket. (None at all:
            # an empty delta, which the commit leaves out of the version.)
            self._write(bucket, delta, delta=not delta)
        elif stored.compacts_with(sum(map(len, delta))):
            merged = segments.merge(
                _read_keyed(self.files, self.url, stored.base),
                [_read_keyed(self.files, self.url, d) for d in stored.deltas]
                + [segments.keyed(delta)],
            )
            self._write(bucket, (line for _key, line in merged), delta=False)
        else:
            self._write(bucket, delta, delta=True)

    def write_bucket(self, bucket: int, lines: Iterable[bytes]) -> int:
        return self._write(bucket, lines, delta=False)

    def _write(self, bucket: int, lines: Iterable[bytes], *, delta: bool) -> int:
        # A retried bundle decides alike (from the same parent and changes),
        # so it replaces the same file.
        path = _bucket_file(self.execution_id, bucket, delta=delta)
        self.files.makedirs(os.path.dirname(path))
        count = self._write_file(path, lines)
        failpoint(BUCKET_WRITTEN)
        return count

    def _write_file(self, path: str, lines: Iterable[bytes]) -> int:
        """Writes `lines` at `path`, and beside it their count, size and crc32."""
        count = 0
        # Whole or not at all; a retried bundle replaces the same file.
        with self.files.write_stream(path) as raw:
            summing = _Summing(raw, writing=True)
            f = io.BufferedWriter(summing, _BLOCK)
            write = f.write
            for line in lines:
                write(line)
                count += 1
            f.flush()
            f.detach()
        stats = {"lines": count, "bytes": summing.bytes, "crc32": summing.crc32}
        self.files.write_atomic(path + _STATS_SUFFIX, json.dumps(stats).encode())
        return count


def _tombstone_problem(line: bytes) -> str | None:
    """What is wrong with a delta's tombstone line, or None."""
    try:
        identifier = Identifier.from_key(segments.key_of(line))
    except (UnicodeDecodeError, ValueError):
        return "is a tombstone whose key is not an identifier's"
    if identifier.key != segments.key_of(line):
        return "is a tombstone whose key is not an identifier's"
    return None


# In a folder on this machine, or in a bucket every worker reaches; each
# run's work folder is inside the store either way.
_ON_THIS_MACHINE = Capabilities(
    reachable_from_remote_workers=False, work_folder="store", keeps_versions=True, holds_nul=True
)
_IN_A_BUCKET = replace(_ON_THIS_MACHINE, reachable_from_remote_workers=True)


class SnapshotStore(ProfileStore):
    @classmethod
    def capabilities_at(cls, location: Location) -> Capabilities:
        return _IN_A_BUCKET if location.is_object else _ON_THIS_MACHINE

    @classmethod
    def at(
        cls, location: Location, *, buckets: int | None = None, work_root: str | None = None
    ) -> SnapshotStore:
        return cls(location.url, buckets=buckets)

    def __init__(self, root: str, *, buckets: int | None = None) -> None:
        """The store in the folder or under the bucket prefix `root` (a path,
        or a canonical `s3://` / `gs://` URL: `core.locations.Location.url`)."""
        self.capabilities = self.capabilities_at(parse(root, "store"))
        self.files = open_files(root)
        self.root = self.files.join()
        self.url = root
        self._requested_buckets = buckets
        if buckets is not None and not 1 <= buckets <= 65536:
            raise StoreError(f"a store has 1 to 65536 buckets, not {buckets}")
        self._load_meta()

    def _load_meta(self) -> None:
        """Reads the bucket count; again under the lock, in case a concurrent
        first run created the store meanwhile."""
        meta = self._read_meta()
        requested = self._requested_buckets
        if meta is None or meta.get("state") == _NEW:
            self.buckets = requested or DEFAULT_BUCKETS
            return
        self.buckets = int(meta["buckets"])
        if requested is not None and requested != self.buckets:
            raise StoreError(
                f"store {self.url} has {self.buckets} buckets; --buckets {requested} "
                "only applies when a store is created"
            )

    # --- paths and metadata -------------------------------------------------

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            meta: dict[str, Any] = json.loads(self.files.read_bytes(_META))
        except FileNotFoundError:
            if any(not name.startswith(".") for name in self.files.listdir("")):
                raise StoreError(
                    f"{self.url} is a folder that is not a profile store (no {_META}); "
                    "give an empty or new folder"
                ) from None
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"store {self.url}: cannot read {_META}: {e}") from e
        if meta.get("format") != FORMAT:
            raise StoreError(f"store {self.url}: unknown format {meta.get('format')!r}")
        if meta.get("format_version") not in _READABLE_FORMATS:
            raise StoreError(
                f"store {self.url} has format version {meta.get('format_version')}; "
                f"this profile-import reads versions {', '.join(map(str, _READABLE_FORMATS))}"
            )
        return meta

    def _write_meta(self, *, new: bool) -> None:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "buckets": self.buckets,
            "created_at": clock.iso(clock.now()),
        }
        if new:
            meta["state"] = _NEW
        else:
            meta["created_at"] = (self._read_meta() or meta)["created_at"]
        self.files.write_atomic(_META, json.dumps(meta, indent=2).encode() + b"\n")

    def _published(self) -> bool:
        """Whether the store's first version was published (else: no store)."""
        meta = self._read_meta()
        if meta is None or meta.get("state") == _NEW:
            return False
        # A format-1 first run that failed left its meta with nothing else.
        return self.files.exists(_CURRENT) or bool(self._manifest_numbers())

    def exists(self) -> bool:
        return self._published()

    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        return self._locked(timeout)

    @contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        if not self.files.is_local:
            with self.files.lock(timeout, f"store {self.url}"):
                yield
            return
        created_root = not os.path.isdir(self.root)
        lock_path = self._path(_LOCK)
        created_lock = not os.path.exists(lock_path)
        os.makedirs(self.root, exist_ok=True)
        with self.files.lock(timeout, f"store {self.url}"):
            try:
                yield
            finally:
                # A first run that published nothing leaves nothing, not even
                # its lock file (a run waiting for it locks the new one).
                if created_lock and not os.path.exists(self._path(_META)):
                    with suppress(OSError):
                        os.remove(lock_path)
                        if created_root:
                            os.rmdir(self.root)

    # --- versions -----------------------------------------------------------

    def _manifest_path(self, number: int) -> str:
        return f"versions/{number:08d}.json"

    def _read_manifest(self, number: int) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(
                self.files.read_bytes(self._manifest_path(number))
            )
        except (OSError, ValueError) as e:
            raise _damaged(self.url, f"version {number} is unreadable: {e}", verify=False) from e
        return manifest

    def _current_number(self) -> int | None:
        """The published version; None for no store. A store that has versions
        but no readable pointer to one is damaged, never empty."""
        if not self._published():
            return None
        try:
            return int(self.files.read_bytes(_CURRENT).strip())
        except FileNotFoundError:
            problem = f"{_CURRENT} is missing"
        except (OSError, ValueError) as e:
            problem = f"{_CURRENT} is unreadable ({e})"
        newest = max(self._manifest_numbers())
        raise _damaged(
            self.url,
            f"{problem}, though versions/ holds versions up to {newest}; "
            f"restore {_CURRENT} (the number of the version to publish) from a backup",
            verify=False,
        )

    def _manifest_numbers(self) -> list[int]:
        """Every manifest in versions/, published or left by a killed run."""
        names = self.files.listdir("versions")
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _version_numbers(self) -> list[int]:
        """The published versions: those up to CURRENT (see the module doc)."""
        current = self._current_number()
        if current is None:
            return []
        return [n for n in self._manifest_numbers() if n <= current]

    @staticmethod
    def _version(manifest: dict[str, Any]) -> Version:
        return Version(
            number=manifest["version"],
            parent=manifest["parent"],
            created_at=manifest["created_at"],
            profiles=manifest["profiles"],
            execution=manifest["execution"],
        )

    def current(self) -> Version | None:
        number = self._current_number()
        return None if number is None else self._version(self._read_manifest(number))

    def versions(self) -> list[Version]:
        return [self._version(self._read_manifest(n)) for n in self._version_numbers()]

    def _shards(self, version: Version | None) -> list[Shard | None]:
        if version is None:
            return [None] * self.buckets
        shards = self._read_manifest(version.number)["shards"]
        return [None if s is None else Shard.from_json(s) for s in shards]

    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        segments = [self._read_ledger_segment(s)[1] for s in self._ledger(version)]
        return ledger.lookup(segments, fingerprints)

    def _ledger(self, version: Version | None) -> list[Shard]:
        return [] if version is None else _ledger_of(self._read_manifest(version.number))

    def _read_ledger_segment(self, segment: Shard) -> tuple[bytes, list[AppliedInput]]:
        """A ledger segment's bytes and entries; damage raises `StoreError`."""
        try:
            data = self.files.read_bytes(segment.path)
        except FileNotFoundError as e:
            raise _damaged(self.url, f"{segment.path} is missing") from e
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot read {segment.path}: {e}") from e
        entries, problems = _ledger_segment(segment, data)
        if problems:
            raise _damaged(self.url, problems[0])
        return data, entries

    def _record_ledger(self, segments: Sequence[Shard]) -> list[Shard]:
        """A ledger's segments as a new version lists them: those recorded,
        checked for their size; those an older version listed by path alone,
        checked as far as they can be and recorded."""
        recorded = []
        for segment in segments:
            if segment.lines is None:
                recorded.append(_recorded(segment.path, self._read_ledger_segment(segment)[0]))
            else:
                self._check_size(segment)
                recorded.append(segment)
        return recorded

    def source(self, version: Version | None) -> SnapshotBucketSource:
        return SnapshotBucketSource(self.files, self._shards(version), self.url)

    def _check_sizes(self, shards: Iterable[Shard | None]) -> None:
        """Every file is there with its recorded size: a cheap check (one stat
        a file) that finds an emptied, cut or lost file before reading any."""
        for bucket in shards:
            for shard in bucket.files if bucket is not None else ():
                self._check_size(shard)

    def _check_size(self, shard: Shard) -> None:
        try:
            size = self.files.size(shard.path)
        except FileNotFoundError:
            raise _damaged(self.url, f"{shard.path} is missing") from None
        if shard.bytes is not None and size != shard.bytes:
            recorded = f"its version records {shard.bytes:,}"
            raise _damaged(self.url, f"{shard.path} has {size:,} bytes, {recorded}")

    # --- a run --------------------------------------------------------------

    def begin(self, execution_id: str, parent: Version | None) -> Staging:
        self._load_meta()
        if self._published():
            self._collect_garbage()
            self._check_sizes([*self._shards(parent), *self._ledger(parent)])
        else:
            # A new store, or what a first run that never published left.
            self._remove_unpublished_store()
            self.files.makedirs("")
            self._write_meta(new=True)
        for folder in ("versions", "data", "staging", ledger.FOLDER):
            self.files.makedirs(folder)
        self.files.makedirs(f"staging/{execution_id}")
        work_dir = self._path("staging", execution_id)
        return Staging(
            execution_id=execution_id,
            parent=parent,
            source=self.source(parent),
            sink=SnapshotBucketSink(self.files, execution_id, self._shards(parent), self.url),
            work_dir=work_dir,
        )

    def _written_buckets(self, execution_id: str) -> dict[int, Shard]:
        folder = f"data/{execution_id}"
        written = {}
        for name in self.files.listdir(folder):
            if name.endswith(".tmp"):  # a write that died; its bundle was retried
                self.files.remove(f"{folder}/{name}")
            if not (name.startswith("bucket-") and name.endswith(_DATA_SUFFIX)):
                continue
            delta = name.endswith(_DELTA_SUFFIX)
            suffix = _DELTA_SUFFIX if delta else _DATA_SUFFIX
            bucket = int(name[len("bucket-") : -len(suffix)])
            if bucket in written:
                raise StoreError(
                    f"store {self.url}: the run wrote bucket {bucket} both whole and "
                    "as a delta; nothing was published"
                )
            written[bucket] = self._written_file(_bucket_file(execution_id, bucket, delta=delta))
        return written

    def _written_file(self, path: str) -> Shard:
        """A file a run wrote, with what its stats file says it holds."""
        try:
            stats = json.loads(self.files.read_bytes(path + _STATS_SUFFIX))
        except (OSError, ValueError) as e:
            raise StoreError(
                f"store {self.url}: {path} was written without its line count "
                f"and checksum ({e}); nothing was published"
            ) from e
        return Shard(path, stats["lines"], stats["bytes"], stats["crc32"])

    def _written_changes(self, execution_id: str) -> list[Shard]:
        """The change segments a run wrote, by bucket."""
        folder = f"data/{execution_id}"
        names = sorted(n for n in self.files.listdir(folder) if n.endswith(_CHANGES_SUFFIX))
        return [self._written_file(f"{folder}/{name}") for name in names]

    def _publish(
        self,
        parent: Version | None,
        shards: list[Shard | None],
        profiles: int,
        execution: dict[str, Any],
        ledger_segments: Sequence[Shard],
        number: int,
        changes: list[Shard] | None,
    ) -> Version:
        """Publishes a version; `changes`: its change segments (None: not known,
        and then `changes --since` an earlier version is refused)."""
        current = self._current_number()
        try:
            pointer: Any = self.files.read_pointer(_CURRENT)[1]
        except FileNotFoundError:
            pointer = None
        if current != (parent.number if parent else None):
            raise StoreError(
                f"store {self.url} changed during the run (another writer without the lock?); "
                "nothing was published"
            )
        self._remove_unpublished_versions(current)
        manifest: dict[str, Any] = {
            "version": number,
            "parent": parent.number if parent else None,
            "created_at": clock.iso(clock.now()),
            "profiles": profiles,
            "execution": execution,
            "shards": [None if s is None else s.to_json() for s in shards],
            "ledger": [segment.to_json() for segment in ledger_segments],
        }
        if changes is not None:
            manifest["changes"] = [c.to_json() for c in changes]
        path = self._manifest_path(number)
        if self.files.exists(path):
            raise StoreError(f"store {self.url}: version {number} exists already")
        meta = self._read_meta()
        first = meta is None or meta.get("state") == _NEW
        if not first and meta is not None and meta["format_version"] != FORMAT_VERSION:
            self._write_meta(new=False)  # so an older profile-import refuses what it cannot read
        self.files.write_atomic(path, json.dumps(manifest, indent=1).encode() + b"\n")
        failpoint(BEFORE_POINTER)
        try:
            # Conditional on the pointer read above (object stores), and only
            # while this run still holds the store's lock (a lease's fence).
            self.files.write_pointer(_CURRENT, f"{number}\n".encode(), pointer, self.files.fence)
        except (PointerMoved, StoreError):
            with suppress(OSError):
                self.files.remove(path)
            raise
        failpoint(AFTER_POINTER)
        if first:
            self._write_meta(new=False)  # the store exists from here on
        return self._version(manifest)

    def commit(
        self,
        staging: Staging,
        execution: dict[str, Any],
        profiles_delta: int,
        buckets_written: int,
        fingerprints: Sequence[str],
    ) -> Version:
        failpoint(DATA_WRITTEN)
        parent = staging.parent
        shards = self._shards(parent)
        written = self._written_buckets(staging.execution_id)
        if len(written) != buckets_written:
            raise StoreError(
                f"store {self.url}: the run wrote {buckets_written} buckets but "
                f"{len(written)} are in {self._path('data', staging.execution_id)}; "
                "nothing was published"
            )
        for bucket, shard in written.items():
            if not shard.path.endswith(_DELTA_SUFFIX):
                shards[bucket] = shard
            elif shard.lines:  # an empty delta changes nothing: left out
                stored = shards[bucket]
                if stored is None:
                    raise StoreError(
                        f"store {self.url}: {shard.path} is a delta over no base; "
                        "nothing was published"
                    )
                shards[bucket] = replace(stored, deltas=(*stored.deltas, shard))
        changes = self._written_changes(staging.execution_id)
        self._check_sizes([*written.values(), *changes])
        for shard in [*written.values(), *changes]:
            self.files.remove(shard.path + _STATS_SUFFIX)  # in the manifest from now on
        # Every bucket file is durable before a manifest can name it.
        if written:
            self.files.sync_dir(f"data/{staging.execution_id}")
            self.files.sync_dir("data")
        # The scratch space goes first: once published, nothing may fail.
        self.files.remove_tree(f"staging/{staging.execution_id}")
        number = (self._current_number() or 0) + 1
        finished_at = clock.iso(clock.now())
        entries = [
            AppliedInput(fp, staging.execution_id, number, finished_at)
            for fp in dict.fromkeys(fingerprints)
        ]
        segments = self._next_ledger(self._ledger(parent), staging.execution_id, entries)
        profiles = (parent.profiles if parent else 0) + profiles_delta
        return self._publish(parent, shards, profiles, execution, segments, number, changes)

    def _next_ledger(
        self, parent: Sequence[Shard], execution_id: str, entries: Sequence[AppliedInput]
    ) -> list[Shard]:
        """The new version's ledger: the parent's segments and the new one it
        writes; past `ledger.MAX_SEGMENTS`, one new segment holding them all."""
        if ledger.folds(len(parent)):
            data = ledger.folded([*(self._read_ledger_segment(s)[1] for s in parent), entries])
            segments = []
        else:
            data = ledger.encode(entries)
            segments = self._record_ledger(parent)
        if data:  # a segment holds at least one entry (see `_ledger_segment`)
            path = ledger.segment_path(execution_id)
            self.files.write_atomic(path, data)
            segments.append(_recorded(path, data))
        return segments

    def abort(self, staging: Staging) -> None:
        self.files.remove_tree(f"staging/{staging.execution_id}")
        if not self._published():
            # A first run that failed leaves no store behind.
            self._remove_unpublished_store()
            with suppress(FileNotFoundError):
                self.files.remove(_META)
            return
        # Interrupted right after publishing, a run must not take its data
        # away from the version that now uses it.
        data, segments = self._referenced()
        if staging.execution_id not in data:
            self.files.remove_tree(f"data/{staging.execution_id}")
        segment = ledger.segment_path(staging.execution_id)
        if segment not in segments:
            with suppress(FileNotFoundError):
                self.files.remove(segment)

    def _referenced(self) -> tuple[set[str], set[str]]:
        """The data folders and the ledger segments that kept versions use."""
        data, ledgers, _ = self._kept_files()
        return data, ledgers

    def _kept_files(self) -> tuple[set[str], set[str], set[str]]:
        """The data folders, ledger segments and change segments that kept
        versions use."""
        data: set[str] = set()
        ledgers: set[str] = set()
        changes: set[str] = set()
        for number in self._version_numbers():
            manifest = self._read_manifest(number)
            for entry in manifest["shards"]:
                if entry is not None:
                    data.update(f.execution for f in Shard.from_json(entry).files)
            ledgers.update(segment.path for segment in _ledger_of(manifest))
            for change in manifest.get("changes", []):
                shard = Shard.from_json(change)
                data.add(shard.execution)
                changes.add(shard.path)
        return data, ledgers, changes

    def _remove_unpublished_versions(self, current: int | None) -> None:
        """Manifests above CURRENT: left by runs killed during their publish."""
        for number in self._manifest_numbers():
            if current is None or number > current:
                self.files.remove(self._manifest_path(number))

    def _remove_unpublished_store(self) -> None:
        """What a first run that never published left (but its meta and the lock)."""
        for name in self.files.listdir(""):
            if name in _STORE_NAMES[1:]:
                self.files.remove_tree(name)
            elif name.endswith(".tmp") and name.startswith(_STORE_NAMES[:2]):
                self.files.remove(name)

    def _collect_garbage(self) -> None:
        """Removes what killed runs left behind (called under the lock)."""
        self._remove_unpublished_versions(self._current_number())
        data, segments = self._referenced()
        for folder in ("data", "staging"):
            self.files.makedirs(folder)
        for name in self.files.listdir("data"):
            if name not in data:
                self.files.remove_tree(f"data/{name}")
        for name in self.files.listdir(ledger.FOLDER):
            if f"{ledger.FOLDER}/{name}" not in segments:
                self.files.remove(f"{ledger.FOLDER}/{name}")
        for name in self.files.listdir("staging"):
            self.files.remove_tree(f"staging/{name}")
        for folder in ("", "versions"):
            for name in self.files.listdir(folder):
                if name.endswith(".tmp"):
                    self.files.remove(f"{folder}/{name}" if folder else name)

    # --- maintenance (callers hold the lock) -------------------------------

    def rollback(self, number: int) -> Version:
        if number not in self._version_numbers():
            raise StoreError(f"store {self.url} has no version {number} (see `versions`)")
        target = self._read_manifest(number)
        current = self.current()
        started = clock.now()
        execution = {"rollback_to": number, "started_at": clock.iso(started)}
        shards = [None if s is None else Shard.from_json(s) for s in target["shards"]]
        self._check_sizes(shards)
        execution_id = f"{started:%Y%m%dT%H%M%SZ}-rollback-{uuid.uuid4().hex[:8]}"
        try:
            changes = self._rollback_changes(number, current, execution_id)
            return self._publish(
                current,
                shards,
                target["profiles"],
                execution,
                self._record_ledger(_ledger_of(target)),
                (self._current_number() or 0) + 1,
                changes,
            )
        except BaseException:
            if execution_id not in self._referenced()[0]:
                self.files.remove_tree(f"data/{execution_id}")
            raise

    def _rollback_changes(
        self, number: int, current: Version | None, execution_id: str
    ) -> list[Shard] | None:
        """A rollback's change records: every profile a version after `number`
        changed, with its state in `current` (what the rollback changes back
        from); None when one of those versions kept no change records."""
        if current is None:
            return None
        keys: set[bytes] = set()
        for later in range(number + 1, current.number + 1):
            found = self._manifest_changes(later)
            if found is None:
                return None
            for shard in found:
                lines = _read_checked(self.files, self.url, shard)
                keys.update(r.key for r in _change_records(lines, later))
        now = self.get_many(current, keys)
        by_bucket: dict[int, dict[bytes, str | None]] = {}
        for key in keys:
            record = now.get(key)
            digest = None if record is None else state_digest(record)
            by_bucket.setdefault(bucket_of(key, self.buckets), {})[key] = digest
        segments_: list[Shard] = []
        for bucket in sorted(by_bucket):
            path = _changes_file(execution_id, bucket)
            data = b"".join(_change_record_lines(by_bucket[bucket]))
            self.files.makedirs(os.path.dirname(path))
            self.files.write_atomic(path, data)
            segments_.append(Shard(path, data.count(b"\n"), len(data), zlib.crc32(data)))
        if segments_:
            self.files.sync_dir(f"data/{execution_id}")
            self.files.sync_dir("data")
        return segments_

    def _manifest_changes(self, number: int) -> list[Shard] | None:
        """The change segments of a kept version (None: it kept none)."""
        found = self._read_manifest(number).get("changes")
        return None if found is None else [Shard.from_json(c) for c in found]

    def prune(self, keep: int) -> list[int]:
        if keep < 1:
            raise StoreError("prune keeps at least one version")
        numbers = self._version_numbers()
        current = self._current_number()
        dropped = [n for n in numbers[:-keep] if n != current]
        for number in dropped:
            self.files.remove(self._manifest_path(number))
        if self.files.isdir("data"):
            self._collect_garbage()
            self._remove_unlisted_changes()
        return dropped

    def _remove_unlisted_changes(self) -> None:
        """Removes the change segments of pruned versions whose data folders
        stay, their bucket files read by a kept version."""
        data, _, changes = self._kept_files()
        for name in sorted(data):
            if not self.files.isdir(f"data/{name}"):
                continue  # damage, which `verify` names
            for file in self.files.listdir(f"data/{name}"):
                path = f"data/{name}/{file}"
                if file.endswith(_CHANGES_SUFFIX) and path not in changes:
                    self.files.remove(path)

    # --- reading ------------------------------------------------------------

    @staticmethod
    def _keyed(source: SnapshotBucketSource, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, export record) of a bucket's profiles (the files checked)."""
        for key, line in source.read_keyed(bucket):
            yield key, line[len(key) + 1 : -1]

    def export(self) -> Iterator[bytes]:
        source = self.source(self.current())
        self._check_sizes(source.shards)
        streams = [self._keyed(source, b) for b in range(self.buckets) if source.shards[b]]
        for _key, record in heapq.merge(*streams):
            yield record

    def get(self, identifier: Identifier) -> bytes | None:
        key = identifier.key
        source = self.source(self.current())
        found = None
        # Read to the end of the bucket, so its count and checksum are checked.
        for line_key, record in self._keyed(source, bucket_of(key, self.buckets)):
            if line_key == key:
                found = record
        return found

    def verify(self, number: int | None = None) -> Verification:
        current = self._current_number()
        if current is None:
            raise StoreError(f"store {self.url} has no published version")
        if number is None and current not in self._manifest_numbers():
            # Every other command fails on it too; older versions may be sound.
            problem = (
                f"{_CURRENT} names version {current}, which versions/ does not hold; "
                f"restore it from a backup, or write a kept version's number in {_CURRENT} "
                "(`verify --version N` checks one)"
            )
            return Verification(current, 0, 0, (problem,))
        if number is None:
            number = current
        problems: list[str] = []
        if number not in self._version_numbers():
            raise StoreError(f"store {self.url} has no version {number} (see `versions`)")
        manifest = self._read_manifest(number)
        shards = manifest.get("shards")
        if not isinstance(shards, list) or len(shards) != self.buckets:
            problems.append(f"version {number}: its manifest does not list {self.buckets} buckets")
            return Verification(number, 0, 0, tuple(problems))
        segments = _ledger_of(manifest)
        problems += self._verify_ledger(number, manifest["execution"], segments)
        unchecked = [
            f"{s.path}: recorded without its line count and checksum (a store written before "
            "format 4): read and checked line by line only; the next run records them"
            for s in segments
            if s.lines is None
        ]
        changes = self._manifest_changes(number) or []
        problems += self._verify_changes(changes)
        files, lines = len(segments) + len(changes), 0
        for bucket, entry in enumerate(shards):
            if entry is None:
                continue
            shard = Shard.from_json(entry)
            files += len(shard.files)
            found, count = self._verify_bucket(bucket, shard)
            problems += found
            lines += count
        if lines != manifest["profiles"] and not any("is missing" in p for p in problems):
            problems.append(
                f"version {number} records {manifest['profiles']:,} profiles, "
                f"its files hold {lines:,}"
            )
        return Verification(number, files, lines, tuple(problems), tuple(unchecked))

    def _verify_ledger(
        self, number: int, execution: dict[str, Any], segments: Sequence[Shard]
    ) -> list[str]:
        """The problems of a version's ledger: of each segment, and an input
        the version's own execution applied that it does not hold."""
        problems: list[str] = []
        entries: list[list[AppliedInput]] = []
        for segment in segments:
            try:
                data = self.files.read_bytes(segment.path)
            except OSError as e:
                what = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read: {e}"
                problems.append(f"{segment.path} {what}")
                continue
            found, wrong = _ledger_segment(segment, data)
            entries.append(found)
            problems += wrong
        if problems:
            return problems
        held = ledger.merged(entries)
        for applied in execution.get("inputs", []):
            fingerprint = applied.get("fingerprint")
            if fingerprint not in held:
                problems.append(
                    f"version {number} applied {applied.get('path')} (fingerprint "
                    f"{str(fingerprint)[:12]}...), which its ledger does not hold"
                )
        return problems

    def _verify_changes(self, changes: Sequence[Shard]) -> list[str]:
        """The problems of a version's change segments: each read whole and
        checked against its record, each line a change record of its bucket,
        in key order."""
        problems: list[str] = []
        for shard in changes:
            name = os.path.basename(shard.path)
            if not (name.startswith("bucket-") and name.endswith(_CHANGES_SUFFIX)):
                problems.append(f"{shard.path}: listed as a change segment")
                continue
            bucket = int(name[len("bucket-") : -len(_CHANGES_SUFFIX)])
            try:
                raw = self.files.open_read(shard.path)
            except OSError as e:
                what = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read: {e}"
                problems.append(f"{shard.path} {what}")
                continue
            bad = 0
            previous = b""
            n = 0
            with raw:
                summing = _Summing(raw, writing=False)
                for n, line in enumerate(io.BufferedReader(summing, _BLOCK), 1):
                    problem = _change_record_problem(line, previous, bucket, self.buckets)
                    previous = line.partition(records.SEPARATOR)[0]
                    if problem is not None:
                        bad += 1
                        if bad <= _MAX_PROBLEMS_PER_FILE:
                            problems.append(f"{shard.path} line {n}: {problem}")
            if bad > _MAX_PROBLEMS_PER_FILE:
                problems.append(f"{shard.path}: {bad - _MAX_PROBLEMS_PER_FILE:,} more bad lines")
            complete = n - (summing.last != b"\n")
            mismatch = shard.mismatch(complete, summing.bytes, summing.crc32)
            if mismatch:
                problems.append(mismatch)
        return problems

    def _verify_bucket(self, bucket: int, shard: Shard) -> tuple[list[str], int]:
        """The problems of a bucket's files, and how many profiles they hold."""
        if not shard.deltas:
            return self._verify_file(bucket, shard)
        # The deltas' newest word on each key (they are small), then the base:
        # its profiles, less those the deltas replace or delete, plus theirs.
        final: dict[bytes, bool] = {}
        problems: list[str] = []
        for delta in shard.deltas:
            found, _ = self._verify_file(bucket, delta, final)
            problems += found
        overridden: dict[bytes, bool] = {}
        found, count = self._verify_file(bucket, shard.base, overridden, final)
        live = sum(final.values())
        return problems + found, count - len(overridden) + live

    def _verify_file(
        self,
        bucket: int,
        shard: Shard,
        keys: dict[bytes, bool] | None = None,
        among: Collection[bytes] | None = None,
    ) -> tuple[list[str], int]:
        """The problems of one bucket file, and its line count. A delta's keys
        go to `keys` (a profile's: True; a tombstone's: False); a base's,
        those `among` holds."""
        delta = shard.path.endswith(_DELTA_SUFFIX)
        name = os.path.basename(shard.path)
        suffix = _DELTA_SUFFIX if delta else _DATA_SUFFIX
        if name != f"bucket-{bucket:05d}{suffix}" and not (
            shard.lines is None and name == f"bucket-{bucket:05d}{_LEGACY_DATA_SUFFIX}"
        ):
            return [f"{shard.path}: listed as bucket {bucket}"], 0
        try:
            raw = self.files.open_read(shard.path)
        except OSError as e:
            what = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read: {e}"
            return [f"{shard.path} {what}"], 0
        problems: list[str] = []
        bad = 0
        previous = b""
        n = 0
        with raw:
            summing = _Summing(raw, writing=False)
            for n, line in enumerate(io.BufferedReader(summing, _BLOCK), 1):
                dead = delta and segments.is_tombstone(line)
                problem = _tombstone_problem(line) if dead else records.problem(line)
                if problem is None:
                    key = segments.key_of(line)
                    if key <= previous:
                        problem = "is out of key order"
                    elif bucket_of(key, self.buckets) != bucket:
                        problem = f"belongs in bucket {bucket_of(key, self.buckets)}"
                    elif keys is not None and (among is None or key in among):
                        keys[key] = not dead
                    previous = key
                if problem is not None:
                    bad += 1
                    if bad <= _MAX_PROBLEMS_PER_FILE:
                        problems.append(f"{shard.path} line {n}: {problem}")
        if bad > _MAX_PROBLEMS_PER_FILE:
            problems.append(f"{shard.path}: {bad - _MAX_PROBLEMS_PER_FILE:,} more bad lines")
        complete = n - (summing.last != b"\n")  # lines with their newline
        mismatch = shard.mismatch(complete, summing.bytes, summing.crc32)
        if mismatch:
            problems.append(mismatch)
        return problems, n

    # --- compaction (callers hold the lock) ---------------------------------

    def compact(self) -> Version | None:
        """Folds every bucket's deltas into a new base, published as a new
        version (same profiles, same ledger); None when no bucket has deltas."""
        self._load_meta()
        current = self.current()
        if current is None:
            raise StoreError(f"store {self.url} has no published version")
        self._collect_garbage()
        shards = self._shards(current)
        folded = [b for b, shard in enumerate(shards) if shard is not None and shard.deltas]
        if not folded:
            return None
        self._check_sizes(shards)
        started = clock.now()
        execution_id = f"{started:%Y%m%dT%H%M%SZ}-compact-{uuid.uuid4().hex[:8]}"
        source = self.source(current)
        sink = SnapshotBucketSink(self.files, execution_id)
        try:
            for bucket in folded:
                sink.write_bucket(bucket, source.read_bucket(bucket))
            written = self._written_buckets(execution_id)
            for bucket, shard in written.items():
                shards[bucket] = shard
            self._check_sizes(written.values())
            for shard in written.values():
                self.files.remove(shard.path + _STATS_SUFFIX)
            self.files.sync_dir(f"data/{execution_id}")
            self.files.sync_dir("data")
            execution = {
                "execution_id": execution_id,
                "compacted_buckets": len(folded),
                "started_at": clock.iso(started),
                "status": "COMPACTED",
            }
            segments_ = self._record_ledger(self._ledger(current))
            number = current.number + 1
            return self._publish(
                current, shards, current.profiles, execution, segments_, number, []
            )
        except BaseException:
            # Never the data of a version that was published after all.
            if execution_id not in self._referenced()[0]:
                self.files.remove_tree(f"data/{execution_id}")
            raise

    def version(self, number: int) -> Version | None:
        if number not in self._version_numbers():
            return None
        try:
            return self._version(self._read_manifest(number))
        except StoreError:
            if number not in self._version_numbers():
                return None  # pruned between the listing and the read
            raise

    def _gone(self, version: Version) -> StoreError:
        return StoreError(
            f"store {self.url}: version {version.number} is no longer kept (pruned); "
            "its profiles cannot be read"
        )

    def _version_shards(self, version: Version) -> list[Shard | None]:
        if version.number not in self._version_numbers():
            raise self._gone(version)
        return self._shards(version)

    def scan(
        self,
        version: Version,
        after: bytes | None = None,
        keep: Callable[[bytes], bool] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        shards = self._version_shards(version)

        def gone() -> Exception:
            if version.number in self._version_numbers():
                return StoreError(
                    f"store {self.url} is damaged: a file of version {version.number} is missing"
                )
            return self._gone(version)

        def bucket(shard: Shard) -> Iterator[tuple[bytes, bytes]]:
            opener = self.files.open_read
            base = sorted_files.keyed_lines(shard.path, after, keep, gone, opener)
            if not shard.deltas:
                return base
            # A base record `keep` drops may still be replaced by a delta's:
            # the deltas are merged whole, and what wins is filtered again.
            deltas = [
                sorted_files.keyed_lines(d.path, after, None, gone, opener) for d in shard.deltas
            ]
            merged = segments.merge(base, deltas)
            return merged if keep is None else (kr for kr in merged if keep(kr[1]))

        # Each bucket is filtered on its own, so only kept records reach the merge.
        streams = [bucket(shard) for shard in shards if shard is not None]
        return heapq.merge(*streams)

    def get_many(self, version: Version, keys: Collection[bytes]) -> dict[bytes, bytes]:
        shards = self._version_shards(version)
        by_bucket: dict[int, list[bytes]] = {}
        for key in set(keys):
            by_bucket.setdefault(bucket_of(key, self.buckets), []).append(key)
        if self.files.is_local:
            return self._get_mapped(version, shards, by_bucket)
        found: dict[bytes, bytes] = {}
        for bucket, wanted in sorted(by_bucket.items()):
            shard = shards[bucket]
            if shard is None:
                continue
            keys_ = sorted(wanted)
            for n, file in enumerate(shard.files):  # the base, then the deltas oldest first
                try:
                    size = self.files.size(file.path)
                    f = io.BufferedReader(self.files.open_read(file.path), _BLOCK)
                except FileNotFoundError as e:
                    raise self._gone(version) from e
                with f:
                    for key, record in sorted_files.find_sorted(f, keys_, size):
                        if n and segments.dead(record):
                            found.pop(key, None)
                        else:
                            found[key] = record
        return found

    def _get_mapped(
        self, version: Version, shards: list[Shard | None], by_bucket: dict[int, list[bytes]]
    ) -> dict[bytes, bytes]:
        """`get_many` in a local store: each bucket's files searched as a run
        searches them (`SnapshotBucketSource.read_keys`: mapped in memory, a
        few pages read around each key), not read through a buffer that a
        seek refills whole."""
        source = SnapshotBucketSource(self.files, shards, self.url)
        found: dict[bytes, bytes] = {}
        try:
            for bucket, wanted in sorted(by_bucket.items()):
                for line in source.read_keys(bucket, sorted(wanted)):
                    key = segments.key_of(line)
                    found[key] = line[len(key) + 1 : -1]
        except StoreError:
            if version.number not in self._version_numbers():
                raise self._gone(version) from None  # pruned while read
            raise
        return found

    # --- the change feed ----------------------------------------------------

    def changed_since(self, since: int) -> ChangedSince:
        current = self.current()
        number = current.number if current is not None else 0
        if since > number:
            raise StoreError(
                f"store {self.url}: version {since} is not published yet (the store is at "
                f"version {number})"
            )
        kept = set(self._version_numbers())
        later: list[tuple[int, list[Shard]]] = []
        for version in range(number, since, -1):  # newest first: the gap found is the newest
            found = self._manifest_changes(version) if version in kept else None
            if found is None:
                why = (
                    "is no longer kept (pruned)"
                    if version not in kept
                    else "was published without change records (by an older profile-import)"
                )
                raise StoreError(
                    f"store {self.url}: no changes since version {since}: version {version} "
                    f"{why}; the oldest --since this store answers is {version}"
                )
            later.append((version, found))
        records: list[ChangeRecord] = []
        for version, found in reversed(later):
            for shard in found:
                records.extend(_change_records(_read_checked(self.files, self.url, shard), version))
        keys = {r.key for r in records}
        now = self.get_many(current, keys) if current is not None and keys else {}
        return ChangedSince(number, records, now)
