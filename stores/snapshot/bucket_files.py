"""The pipeline's view of a snapshot store: a version's buckets as a
`BucketSource`, a run's as a `BucketSink`."""

from __future__ import annotations

import io
import json
import mmap
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress

from profile_import.core import records, segments

from .. import sorted_files
from ..base import (
    BucketSink,
    BucketSource,
)
from ..failpoints import BUCKET_WRITTEN, failpoint
from ..files import Files
from .checked import Summing, damaged, read_keyed, read_merged
from .manifest import (
    BLOCK,
    STATS_SUFFIX,
    DeltaLimits,
    Shard,
    bucket_file,
    change_record_lines,
    changes_file,
)


class SnapshotBucketSource(BucketSource):
    """Reads the buckets of one version: each bucket's base and delta segments,
    merged. A file read to its end is checked (lines, size, crc32): a damaged
    one raises `StoreError` there.

    A run reads only the profiles its commands touch (`read_keys`) and its sink
    writes only what changed (`write_changes`): a delta segment. Compaction
    reads (`read_bucket`) and writes (`write_bucket`) whole buckets."""

    def __init__(self, files: Files, shards: list[Shard | None], url: str | None = None) -> None:
        self.files = files
        self.url = url or files.url
        self.shards = shards

    def read_keyed(self, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, store line) of the profiles of `bucket`, in key order."""
        shard = self.shards[bucket]
        if shard is not None:
            yield from read_merged(self.files, self.url, shard)

    def read_bucket(self, bucket: int) -> Iterator[bytes]:
        """The store lines of `bucket`, sorted by key, checked as `read_keyed`."""
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
            return [kl for kl in read_keyed(self.files, self.url, file) if kl[0] in wanted]
        sep = records.SEPARATOR
        try:
            with self.files.open_read(file.path) as raw:
                actual = os.fstat(raw.fileno()).st_size
                if actual != size:
                    raise damaged(self.url, f"{file.path} holds {actual} bytes, not {size}")
                if not size:
                    return []
                # Mapped: only the pages the search looks at are read.
                with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    found = sorted_files.find_mapped(data, keys)
                    return [(key, key + sep + record + b"\n") for key, record in found]
        except FileNotFoundError as e:
            raise damaged(self.url, f"{file.path} is missing") from e
        except ValueError as e:  # a line without a key: not a store line
            raise damaged(self.url, f"{file.path}: {e}") from e


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
        limits: DeltaLimits | None = None,
    ) -> None:
        self.files = files
        self.execution_id = execution_id
        self.parent = parent
        self.url = url or files.url
        self.limits = limits or DeltaLimits()

    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        # The change records first: the bucket's own files, written last,
        # are what the commit counts, so a bucket counted has both.
        path = changes_file(self.execution_id, bucket)
        if before:
            self.files.makedirs(os.path.dirname(path))
            self._write_file(path, change_record_lines(before))
        else:  # a retried bundle that now changes nothing (it cannot, but never a stale file)
            with suppress(FileNotFoundError):
                self.files.remove(path)
        delta = segments.delta_lines(lines, deleted)
        stored = self.parent[bucket] if self.parent is not None else None
        if stored is None:
            # Nothing stored: the changes are the whole bucket. (None at all:
            # an empty delta, which the commit leaves out of the version.)
            self._write(bucket, delta, delta=not delta)
        elif stored.compacts_with(sum(map(len, delta)), self.limits):
            merged = segments.merge(
                read_keyed(self.files, self.url, stored.base),
                [read_keyed(self.files, self.url, d) for d in stored.deltas]
                + [segments.keyed(delta)],
            )
            self._write(bucket, (line for _key, line in merged), delta=False)
        else:
            self._write(bucket, delta, delta=True)

    def write_bucket(self, bucket: int, lines: Iterable[bytes]) -> int:
        """Replaces the content of `bucket` (store lines, sorted by key) with
        a new base file; returns the number of lines written."""
        return self._write(bucket, lines, delta=False)

    def _write(self, bucket: int, lines: Iterable[bytes], *, delta: bool) -> int:
        # A retried bundle decides alike (from the same parent and changes),
        # so it replaces the same file.
        path = bucket_file(self.execution_id, bucket, delta=delta)
        self.files.makedirs(os.path.dirname(path))
        count = self._write_file(path, lines)
        failpoint(BUCKET_WRITTEN)
        return count

    def _write_file(self, path: str, lines: Iterable[bytes]) -> int:
        """Writes `lines` at `path`, and beside it their count, size and crc32."""
        count = 0
        # Whole or not at all; a retried bundle replaces the same file.
        with self.files.write_stream(path) as raw:
            summing = Summing(raw, writing=True)
            f = io.BufferedWriter(summing, BLOCK)
            write = f.write
            for line in lines:
                write(line)
                count += 1
            f.flush()
            f.detach()
        stats = {"lines": count, "bytes": summing.bytes, "crc32": summing.crc32}
        self.files.write_atomic(path + STATS_SUFFIX, json.dumps(stats).encode())
        return count
