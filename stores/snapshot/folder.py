"""A snapshot store's folder: its meta, lock, manifests, versions and ledger."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from typing import Any

from profile_import.core import clock
from profile_import.core.idempotency import AppliedInput
from profile_import.core.locations import Location, parse

from ..base import Capabilities, StoreError, Version
from ..folders import open_files
from .bucket_files import SnapshotBucketSource
from .checked import damaged
from .manifest import (
    CURRENT,
    DEFAULT_BUCKETS,
    FORMAT,
    FORMAT_VERSION,
    LOCK,
    META,
    NEW,
    READABLE_FORMATS,
    Shard,
    ledger_of,
    ledger_segment,
    record_of,
)

# In a folder on this machine, or in a bucket every worker reaches; each
# run's work folder is inside the store either way.
ON_THIS_MACHINE = Capabilities(
    reachable_from_remote_workers=False, work_folder="store", keeps_versions=True, holds_nul=True
)
IN_A_BUCKET = replace(ON_THIS_MACHINE, reachable_from_remote_workers=True)


class SnapshotFolder:
    """A store folder (or bucket prefix): what every part of the store reads."""

    capabilities: Capabilities

    @classmethod
    def capabilities_at(cls, location: Location) -> Capabilities:
        return IN_A_BUCKET if location.is_object else ON_THIS_MACHINE

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
        if meta is None or meta.get("state") == NEW:
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
            meta: dict[str, Any] = json.loads(self.files.read_bytes(META))
        except FileNotFoundError:
            if any(not name.startswith(".") for name in self.files.listdir("")):
                raise StoreError(
                    f"{self.url} is a folder that is not a profile store (no {META}); "
                    "give an empty or new folder"
                ) from None
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"store {self.url}: cannot read {META}: {e}") from e
        if meta.get("format") != FORMAT:
            raise StoreError(f"store {self.url}: unknown format {meta.get('format')!r}")
        if meta.get("format_version") not in READABLE_FORMATS:
            raise StoreError(
                f"store {self.url} has format version {meta.get('format_version')}; "
                f"this profile-import reads versions {', '.join(map(str, READABLE_FORMATS))}"
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
            meta["state"] = NEW
        else:
            meta["created_at"] = (self._read_meta() or meta)["created_at"]
        self.files.write_atomic(META, json.dumps(meta, indent=2).encode() + b"\n")

    def _published(self) -> bool:
        """Whether the store's first version was published (else: no store)."""
        meta = self._read_meta()
        if meta is None or meta.get("state") == NEW:
            return False
        # A format-1 first run that failed left its meta with nothing else.
        return self.files.exists(CURRENT) or bool(self._manifest_numbers())

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
        lock_path = self._path(LOCK)
        created_lock = not os.path.exists(lock_path)
        os.makedirs(self.root, exist_ok=True)
        with self.files.lock(timeout, f"store {self.url}"):
            try:
                yield
            finally:
                # A first run that published nothing leaves nothing, not even
                # its lock file (a run waiting for it locks the new one).
                if created_lock and not os.path.exists(self._path(META)):
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
            raise damaged(self.url, f"version {number} is unreadable: {e}", verify=False) from e
        return manifest

    def _current_number(self) -> int | None:
        """The published version; None for no store. A store that has versions
        but no readable pointer to one is damaged, never empty."""
        if not self._published():
            return None
        try:
            return int(self.files.read_bytes(CURRENT).strip())
        except FileNotFoundError:
            problem = f"{CURRENT} is missing"
        except (OSError, ValueError) as e:
            problem = f"{CURRENT} is unreadable ({e})"
        newest = max(self._manifest_numbers())
        raise damaged(
            self.url,
            f"{problem}, though versions/ holds versions up to {newest}; "
            f"restore {CURRENT} (the number of the version to publish) from a backup",
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

    def _ledger(self, version: Version | None) -> list[Shard]:
        return [] if version is None else ledger_of(self._read_manifest(version.number))

    def _read_ledger_segment(self, segment: Shard) -> tuple[bytes, list[AppliedInput]]:
        """A ledger segment's bytes and entries; damage raises `StoreError`."""
        try:
            data = self.files.read_bytes(segment.path)
        except FileNotFoundError as e:
            raise damaged(self.url, f"{segment.path} is missing") from e
        except OSError as e:
            raise StoreError(f"store {self.url}: cannot read {segment.path}: {e}") from e
        entries, problems = ledger_segment(segment, data)
        if problems:
            raise damaged(self.url, problems[0])
        return data, entries

    def _record_ledger(self, segments: Sequence[Shard]) -> list[Shard]:
        """A ledger's segments as a new version lists them: those recorded,
        checked for their size; those an older version listed by path alone,
        checked as far as they can be and recorded."""
        recorded = []
        for segment in segments:
            if segment.lines is None:
                recorded.append(record_of(segment.path, self._read_ledger_segment(segment)[0]))
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
            raise damaged(self.url, f"{shard.path} is missing") from None
        if shard.bytes is not None and size != shard.bytes:
            recorded = f"its version records {shard.bytes:,}"
            raise damaged(self.url, f"{shard.path} has {size:,} bytes, {recorded}")

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

    def _manifest_changes(self, number: int) -> list[Shard] | None:
        """The change segments of a kept version (None: it kept none)."""
        found = self._read_manifest(number).get("changes")
        return None if found is None else [Shard.from_json(c) for c in found]
