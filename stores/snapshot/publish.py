"""A run on a snapshot store: staging, and the atomic publish of a version."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from profile_import.core import clock
from profile_import.core.idempotency import AppliedInput

from .. import ledger
from ..base import (
    Staging,
    StoreError,
    Version,
)
from ..failpoints import AFTER_POINTER, BEFORE_POINTER, DATA_WRITTEN, failpoint
from ..files import PointerMoved
from .bucket_files import SnapshotBucketSink, SnapshotBucketSource
from .garbage import Garbage
from .manifest import (
    CHANGES_SUFFIX,
    CURRENT,
    DATA_SUFFIX,
    DELTA_SUFFIX,
    FORMAT_VERSION,
    META,
    NEW,
    STATS_SUFFIX,
    DeltaLimits,
    Shard,
    bucket_file,
    record_of,
)


@dataclass
class SnapshotStaging(Staging):
    """A run on a snapshot store, with its store's own source and sink (which
    also read and write whole buckets)."""

    source: SnapshotBucketSource
    sink: SnapshotBucketSink


@dataclass(frozen=True)
class Commit:
    """A version to publish, as data: the requirement that must still hold when
    it is published (the store is still at `parent`), and the new version's
    content (its buckets' files, ledger and change segments, profile count).
    `changes` None: not known, and then `changes --since` an earlier version
    is refused."""

    parent: Version | None
    number: int
    shards: list[Shard | None]
    profiles: int
    execution: dict[str, Any]
    ledger: Sequence[Shard]
    changes: list[Shard] | None

    @property
    def parent_number(self) -> int | None:
        return self.parent.number if self.parent else None

    def manifest(self, created_at: str) -> dict[str, Any]:
        """The new version's manifest (`versions/<number>.json`)."""
        manifest: dict[str, Any] = {
            "version": self.number,
            "parent": self.parent_number,
            "created_at": created_at,
            "profiles": self.profiles,
            "execution": self.execution,
            "shards": [None if s is None else s.to_json() for s in self.shards],
            "ledger": [segment.to_json() for segment in self.ledger],
        }
        if self.changes is not None:
            manifest["changes"] = [c.to_json() for c in self.changes]
        return manifest


class Publishing(Garbage):
    """A run: `begin` stages it, `commit` publishes it, `abort` discards it."""

    def delta_limits(self) -> DeltaLimits:
        """When a run's sink rewrites a bucket rather than add a delta to it."""
        return DeltaLimits()

    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        found = [self._read_ledger_segment(s)[1] for s in self._ledger(version)]
        return ledger.lookup(found, fingerprints)

    def begin(self, execution_id: str, parent: Version | None) -> SnapshotStaging:
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
        return SnapshotStaging(
            execution_id=execution_id,
            parent=parent,
            source=self.source(parent),
            sink=SnapshotBucketSink(
                self.files, execution_id, self._shards(parent), self.url, self.delta_limits()
            ),
            work_dir=work_dir,
        )

    def _written_buckets(self, execution_id: str) -> dict[int, Shard]:
        folder = f"data/{execution_id}"
        written = {}
        for name in self.files.listdir(folder):
            if name.endswith(".tmp"):  # a write that died; its bundle was retried
                self.files.remove(f"{folder}/{name}")
            if not (name.startswith("bucket-") and name.endswith(DATA_SUFFIX)):
                continue
            delta = name.endswith(DELTA_SUFFIX)
            suffix = DELTA_SUFFIX if delta else DATA_SUFFIX
            bucket = int(name[len("bucket-") : -len(suffix)])
            if bucket in written:
                raise StoreError(
                    f"store {self.url}: the run wrote bucket {bucket} both whole and "
                    "as a delta; nothing was published"
                )
            written[bucket] = self._written_file(bucket_file(execution_id, bucket, delta=delta))
        return written

    def _written_file(self, path: str) -> Shard:
        """A file a run wrote, with what its stats file says it holds."""
        try:
            stats = json.loads(self.files.read_bytes(path + STATS_SUFFIX))
        except (OSError, ValueError) as e:
            raise StoreError(
                f"store {self.url}: {path} was written without its line count "
                f"and checksum ({e}); nothing was published"
            ) from e
        return Shard(path, stats["lines"], stats["bytes"], stats["crc32"])

    def _written_changes(self, execution_id: str) -> list[Shard]:
        """The change segments a run wrote, by bucket."""
        folder = f"data/{execution_id}"
        names = sorted(n for n in self.files.listdir(folder) if n.endswith(CHANGES_SUFFIX))
        return [self._written_file(f"{folder}/{name}") for name in names]

    def _publish(self, commit: Commit) -> Version:
        """Publishes `commit` as a version, if its requirement still holds."""
        current = self._current_number()
        try:
            pointer: Any = self.files.read_pointer(CURRENT)[1]
        except FileNotFoundError:
            pointer = None
        if current != commit.parent_number:
            raise StoreError(
                f"store {self.url} changed during the run (another writer without the lock?); "
                "nothing was published"
            )
        self._remove_unpublished_versions(current)
        manifest = commit.manifest(clock.iso(clock.now()))
        number = commit.number
        path = self._manifest_path(number)
        if self.files.exists(path):
            raise StoreError(f"store {self.url}: version {number} exists already")
        meta = self._read_meta()
        first = meta is None or meta.get("state") == NEW
        if not first and meta is not None and meta["format_version"] != FORMAT_VERSION:
            self._write_meta(new=False)  # so an older profile-import refuses what it cannot read
        self.files.write_atomic(path, json.dumps(manifest, indent=1).encode() + b"\n")
        failpoint(BEFORE_POINTER)
        try:
            # Conditional on the pointer read above (object stores), and only
            # while this run still holds the store's lock (a lease's fence).
            self.files.write_pointer(CURRENT, f"{number}\n".encode(), pointer, self.files.fence)
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
        published = self._published_by(staging)
        if published is not None:  # a retry of this step, after its publish
            return published
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
            if not shard.path.endswith(DELTA_SUFFIX):
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
            self.files.remove(shard.path + STATS_SUFFIX)  # in the manifest from now on
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
        return self._publish(Commit(parent, number, shards, profiles, execution, segments, changes))

    def _published_by(self, staging: Staging) -> Version | None:
        """The version this execution published already, on top of its parent
        (a retried final step finds it, as Beam may retry a bundle that
        published), else None. Its staging is gone by then: only the published
        manifest says so."""
        after = staging.parent.number if staging.parent else 0
        for number in self._version_numbers():
            if number > after:
                manifest = self._read_manifest(number)
                if manifest["execution"].get("execution_id") == staging.execution_id:
                    return self._version(manifest)
        return None

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
        if data:  # a segment holds at least one entry (see `ledger_segment`)
            path = ledger.segment_path(execution_id)
            self.files.write_atomic(path, data)
            segments.append(record_of(path, data))
        return segments

    def abort(self, staging: Staging) -> None:
        self.files.remove_tree(f"staging/{staging.execution_id}")
        if not self._published():
            # A first run that failed leaves no store behind.
            self._remove_unpublished_store()
            with suppress(FileNotFoundError):
                self.files.remove(META)
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
