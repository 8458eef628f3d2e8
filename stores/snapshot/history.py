"""A snapshot store's history: rollback and prune."""

from __future__ import annotations

import os
import uuid
import zlib

from profile_import.core import clock
from profile_import.core.changes import state_digest
from profile_import.core.identifiers import bucket_of

from ..base import (
    StoreError,
    Version,
)
from .checked import read_checked
from .manifest import (
    CHANGES_SUFFIX,
    Shard,
    change_record_lines,
    change_records,
    changes_file,
    ledger_of,
)
from .publish import Commit, Publishing
from .reads import Reading


class History(Publishing, Reading):
    """Publishing an older version again, and dropping old ones (callers hold
    the lock)."""

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
            number_ = (self._current_number() or 0) + 1
            segments_ = self._record_ledger(ledger_of(target))
            commit = Commit(
                current, number_, shards, target["profiles"], execution, segments_, changes
            )
            return self._publish(commit)
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
                lines = read_checked(self.files, self.url, shard)
                keys.update(r.key for r in change_records(lines, later))
        now = self.get_many(current, keys)
        by_bucket: dict[int, dict[bytes, str | None]] = {}
        for key in keys:
            record = now.get(key)
            digest = None if record is None else state_digest(record)
            by_bucket.setdefault(bucket_of(key, self.buckets), {})[key] = digest
        segments_: list[Shard] = []
        for bucket in sorted(by_bucket):
            path = changes_file(execution_id, bucket)
            data = b"".join(change_record_lines(by_bucket[bucket]))
            self.files.makedirs(os.path.dirname(path))
            self.files.write_atomic(path, data)
            segments_.append(Shard(path, data.count(b"\n"), len(data), zlib.crc32(data)))
        if segments_:
            self.files.sync_dir(f"data/{execution_id}")
            self.files.sync_dir("data")
        return segments_

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
                if file.endswith(CHANGES_SUFFIX) and path not in changes:
                    self.files.remove(path)
