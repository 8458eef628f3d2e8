"""The embedded default store: versioned snapshots in a folder.

Layout of a store folder:

    profile-store.json          what this folder is: format, bucket count
    CURRENT                     the published version number (replaced atomically)
    versions/00000007.json      one manifest per version: its buckets' files,
                                its profile count, its ledger's segments
    data/<execution>/bucket-00042.ndjson
                                the buckets an execution wrote: store lines
                                (`core.records`) sorted by key
    ledger/<execution>.ndjson   the input fingerprints an execution applied
                                (see `ledger`)
    staging/<execution>/        a run's scratch space (rejects, progress)
    .lock                       held by the run in progress

Profiles are spread over a fixed number of buckets by a hash of their key; a
run rewrites only the buckets its commands touch, and a version's manifest
points at the newest file of every bucket, so untouched buckets are shared
between versions. Publishing a version is writing its manifest, then
replacing `CURRENT` with a rename: a run that fails or is killed before that
leaves the store exactly as it was. Old versions stay until `prune`, so
`rollback` can publish any kept one again.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from profile_import.core import clock, records
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import Identifier, bucket_of

from . import ledger, locking, sorted_files
from .base import (
    BucketSink,
    BucketSource,
    ProfileStore,
    Staging,
    StoreError,
    Version,
)

FORMAT = "profile-import/snapshot-store"
FORMAT_VERSION = 1
DEFAULT_BUCKETS = 64
_META = "profile-store.json"
_CURRENT = "CURRENT"


def _write_atomic(path: str, data: bytes) -> None:
    """Writes a file whole or not at all, durable before it becomes visible."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _bucket_file(execution_id: str, bucket: int) -> str:
    return f"data/{execution_id}/bucket-{bucket:05d}.ndjson"


class SnapshotBucketSource(BucketSource):
    def __init__(self, root: str, shards: list[str | None]) -> None:
        self.root = root
        self.shards = shards

    def read_bucket(self, bucket: int) -> Iterator[bytes]:
        shard = self.shards[bucket]
        if shard is None:
            return
        path = os.path.join(self.root, shard)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
        except FileNotFoundError as e:
            raise StoreError(f"store {self.root} is damaged: {shard} is missing") from e
        with f:
            yield from f


class SnapshotBucketSink(BucketSink):
    def __init__(self, root: str, execution_id: str) -> None:
        self.root = root
        self.execution_id = execution_id

    def write_bucket(self, bucket: int, lines: Iterable[bytes]) -> int:
        path = os.path.join(self.root, _bucket_file(self.execution_id, bucket))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        count = 0
        with open(tmp, "wb", buffering=1 << 20) as f:
            for line in lines:
                f.write(line)
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a retried bundle replaces the same file
        return count


class SnapshotStore(ProfileStore):
    def __init__(self, root: str, *, buckets: int | None = None) -> None:
        self.root = os.path.abspath(root)
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
        if meta is None:
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
            with open(self._path(_META), "rb") as f:
                meta: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            if os.path.isdir(self.root) and any(
                not name.startswith(".") for name in os.listdir(self.root)
            ):
                raise StoreError(
                    f"{self.url} is a folder that is not a profile store (no {_META}); "
                    "give an empty or new folder"
                ) from None
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"store {self.url}: cannot read {_META}: {e}") from e
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"store {self.url}: unknown format {meta.get('format')!r}")
        return meta

    def exists(self) -> bool:
        return os.path.exists(self._path(_META))

    def _create(self) -> None:
        for folder in ("versions", "data", "staging", ledger.FOLDER):
            os.makedirs(self._path(folder), exist_ok=True)
        if not self.exists():
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "buckets": self.buckets,
                "created_at": clock.iso(clock.now()),
            }
            _write_atomic(self._path(_META), json.dumps(meta, indent=2).encode() + b"\n")

    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        os.makedirs(self.root, exist_ok=True)
        return locking.exclusive(self._path(".lock"), timeout, f"store {self.url}")

    # --- versions -----------------------------------------------------------

    def _manifest_path(self, number: int) -> str:
        return self._path("versions", f"{number:08d}.json")

    def _read_manifest(self, number: int) -> dict[str, Any]:
        try:
            with open(self._manifest_path(number), "rb") as f:
                manifest: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"store {self.url}: version {number} is unreadable: {e}") from e
        return manifest

    def _current_number(self) -> int | None:
        try:
            with open(self._path(_CURRENT), "rb") as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise StoreError(f"store {self.url}: CURRENT is damaged: {e}") from e

    def _version_numbers(self) -> list[int]:
        try:
            names = os.listdir(self._path("versions"))
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _next_number(self) -> int:
        return max(self._version_numbers(), default=0) + 1

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

    def _shards(self, version: Version | None) -> list[str | None]:
        if version is None:
            return [None] * self.buckets
        shards: list[str | None] = self._read_manifest(version.number)["shards"]
        return shards

    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        if version is None:
            return {}
        segments = self._read_manifest(version.number).get("ledger", [])
        try:
            return ledger.lookup(self.root, segments, fingerprints)
        except (OSError, ValueError, TypeError) as e:
            raise StoreError(
                f"store {self.url}: the ledger of version {version.number} is unreadable: {e}"
            ) from e

    def source(self, version: Version | None) -> SnapshotBucketSource:
        return SnapshotBucketSource(self.root, self._shards(version))

    # --- a run --------------------------------------------------------------

    def begin(self, execution_id: str, parent: Version | None) -> Staging:
        self._load_meta()
        self._create()
        self._collect_garbage()
        work_dir = self._path("staging", execution_id)
        os.makedirs(work_dir, exist_ok=True)
        return Staging(
            execution_id=execution_id,
            parent=parent,
            source=self.source(parent),
            sink=SnapshotBucketSink(self.root, execution_id),
            work_dir=work_dir,
        )

    def _written_buckets(self, execution_id: str) -> dict[int, str]:
        folder = self._path("data", execution_id)
        written = {}
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.startswith("bucket-") and name.endswith(".ndjson"):
                bucket = int(name[len("bucket-") : -len(".ndjson")])
                written[bucket] = _bucket_file(execution_id, bucket)
        return written

    def _publish(
        self,
        parent: Version | None,
        shards: list[str | None],
        profiles: int,
        execution: dict[str, Any],
        ledger_segments: list[str],
        number: int,
    ) -> Version:
        if self._current_number() != (parent.number if parent else None):
            raise StoreError(
                f"store {self.url} changed during the run (another writer without the lock?); "
                "nothing was published"
            )
        manifest = {
            "version": number,
            "parent": parent.number if parent else None,
            "created_at": clock.iso(clock.now()),
            "profiles": profiles,
            "execution": execution,
            "shards": shards,
            "ledger": ledger_segments,
        }
        path = self._manifest_path(number)
        if os.path.exists(path):
            raise StoreError(f"store {self.url}: version {number} exists already")
        _write_atomic(path, json.dumps(manifest, indent=1).encode() + b"\n")
        _write_atomic(self._path(_CURRENT), f"{number}\n".encode())
        return self._version(manifest)

    def commit(
        self,
        staging: Staging,
        execution: dict[str, Any],
        profiles_delta: int,
        buckets_written: int,
        fingerprints: Sequence[str],
    ) -> Version:
        parent = staging.parent
        shards = self._shards(parent)
        written = self._written_buckets(staging.execution_id)
        if len(written) != buckets_written:
            raise StoreError(
                f"store {self.url}: the run wrote {buckets_written} buckets but "
                f"{len(written)} are in {self._path('data', staging.execution_id)}; "
                "nothing was published"
            )
        for bucket, path in written.items():
            shards[bucket] = path
        # Every bucket file is durable before a manifest can name it.
        if written:
            _fsync_dir(self._path("data", staging.execution_id))
            _fsync_dir(self._path("data"))
        # The scratch space goes first: once published, nothing may fail.
        shutil.rmtree(staging.work_dir, ignore_errors=True)
        number = self._next_number()
        finished_at = clock.iso(clock.now())
        entries = [
            AppliedInput(fp, staging.execution_id, number, finished_at)
            for fp in dict.fromkeys(fingerprints)
        ]
        parent_segments = self._read_manifest(parent.number).get("ledger", []) if parent else []
        segments, segment = ledger.next_segments(
            self.root, parent_segments, staging.execution_id, entries
        )
        _write_atomic(self._path(ledger.segment_path(staging.execution_id)), segment)
        profiles = (parent.profiles if parent else 0) + profiles_delta
        return self._publish(parent, shards, profiles, execution, segments, number)

    def abort(self, staging: Staging) -> None:
        shutil.rmtree(staging.work_dir, ignore_errors=True)
        # Interrupted right after publishing, a run must not take its data
        # away from the version that now uses it.
        data, segments = self._referenced()
        if staging.execution_id not in data:
            shutil.rmtree(self._path("data", staging.execution_id), ignore_errors=True)
        segment = ledger.segment_path(staging.execution_id)
        if segment not in segments:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(segment))

    def _referenced(self) -> tuple[set[str], set[str]]:
        """The data folders and the ledger segments that kept versions use."""
        data, segments = set(), set()
        for number in self._version_numbers():
            manifest = self._read_manifest(number)
            for shard in manifest["shards"]:
                if shard is not None:
                    data.add(shard.split("/")[1])
            segments.update(manifest.get("ledger", []))
        return data, segments

    def _collect_garbage(self) -> None:
        """Removes what killed runs left behind (called under the lock)."""
        data, segments = self._referenced()
        for name in os.listdir(self._path("data")):
            if name not in data:
                shutil.rmtree(self._path("data", name), ignore_errors=True)
        ledger_folder = self._path(ledger.FOLDER)
        for name in os.listdir(ledger_folder) if os.path.isdir(ledger_folder) else ():
            if f"{ledger.FOLDER}/{name}" not in segments:
                os.remove(os.path.join(ledger_folder, name))
        for name in os.listdir(self._path("staging")):
            shutil.rmtree(self._path("staging", name), ignore_errors=True)
        for name in os.listdir(self._path("versions")):
            if name.endswith(".tmp"):
                os.remove(self._path("versions", name))

    # --- maintenance (callers hold the lock) -------------------------------

    def rollback(self, number: int) -> Version:
        if number not in self._version_numbers():
            raise StoreError(f"store {self.url} has no version {number} (see `versions`)")
        target = self._read_manifest(number)
        current = self.current()
        execution = {"rollback_to": number, "started_at": clock.iso(clock.now())}
        return self._publish(
            current,
            target["shards"],
            target["profiles"],
            execution,
            target.get("ledger", []),
            self._next_number(),
        )

    def prune(self, keep: int) -> list[int]:
        if keep < 1:
            raise StoreError("prune keeps at least one version")
        numbers = self._version_numbers()
        current = self._current_number()
        dropped = [n for n in numbers[:-keep] if n != current]
        for number in dropped:
            os.remove(self._manifest_path(number))
        if os.path.isdir(self._path("data")):
            self._collect_garbage()
        return dropped

    # --- reading ------------------------------------------------------------

    def _keyed(self, source: SnapshotBucketSource, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        for line in source.read_bucket(bucket):
            yield records.split(line)

    def export(self) -> Iterator[bytes]:
        source = self.source(self.current())
        streams = [self._keyed(source, b) for b in range(self.buckets) if source.shards[b]]
        for _key, record in heapq.merge(*streams):
            yield record

    def get(self, identifier: Identifier) -> bytes | None:
        key = identifier.key
        source = self.source(self.current())
        for line_key, record in self._keyed(source, bucket_of(key, self.buckets)):
            if line_key == key:
                return record
            if line_key > key:
                break
        return None

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

    def _version_shards(self, version: Version) -> list[str | None]:
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

        # Each bucket is filtered on its own, so only kept records reach the merge.
        streams = [
            sorted_files.keyed_lines(self._path(shard), after, keep, gone)
            for shard in shards
            if shard is not None
        ]
        return heapq.merge(*streams)

    def get_many(self, version: Version, keys: Collection[bytes]) -> dict[bytes, bytes]:
        shards = self._version_shards(version)
        by_bucket: dict[int, list[bytes]] = {}
        for key in set(keys):
            by_bucket.setdefault(bucket_of(key, self.buckets), []).append(key)
        found: dict[bytes, bytes] = {}
        for bucket, wanted in sorted(by_bucket.items()):
            shard = shards[bucket]
            if shard is None:
                continue
            try:
                f = open(self._path(shard), "rb")  # noqa: SIM115 - closed by the `with`
            except FileNotFoundError as e:
                raise self._gone(version) from e
            with f:
                found.update(sorted_files.find_sorted(f, sorted(wanted)))
        return found
