"""Compaction: every bucket's deltas folded into a new base, as a version."""

from __future__ import annotations

import uuid

from profile_import.core import clock

from ..base import (
    StoreError,
    Version,
)
from .bucket_files import SnapshotBucketSink
from .manifest import STATS_SUFFIX
from .publish import Commit, Publishing


class Compaction(Publishing):
    """Folding deltas into bases (callers hold the lock)."""

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
                self.files.remove(shard.path + STATS_SUFFIX)
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
                Commit(current, number, shards, current.profiles, execution, segments_, [])
            )
        except BaseException:
            # Never the data of a version that was published after all.
            if execution_id not in self._referenced()[0]:
                self.files.remove_tree(f"data/{execution_id}")
            raise
