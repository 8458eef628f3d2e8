"""Reading a snapshot store: export, get, a version's scan, get_many, changes."""

from __future__ import annotations

import heapq
import io
from collections.abc import Callable, Collection, Iterator

from profile_import.core import segments
from profile_import.core.changes import ChangeRecord
from profile_import.core.identifiers import Identifier, bucket_of

from .. import sorted_files
from ..base import (
    ChangedSince,
    StoreError,
    Version,
)
from .bucket_files import SnapshotBucketSource
from .checked import read_checked
from .folder import SnapshotFolder
from .manifest import BLOCK, Shard, change_records


class Reading(SnapshotFolder):
    """Reading profiles: never under the lock, always from one version."""

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
                    f = io.BufferedReader(self.files.open_read(file.path), BLOCK)
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
                records.extend(change_records(read_checked(self.files, self.url, shard), version))
        keys = {r.key for r in records}
        now = self.get_many(current, keys) if current is not None and keys else {}
        return ChangedSince(number, records, now)
