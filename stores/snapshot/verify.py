"""Checking a whole version of a snapshot store, line by line."""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Sequence
from typing import Any

from profile_import.core import records, segments
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import bucket_of

from .. import ledger
from ..base import (
    StoreError,
    Verification,
)
from .checked import Summing
from .folder import SnapshotFolder
from .manifest import (
    BLOCK,
    CHANGES_SUFFIX,
    CURRENT,
    DATA_SUFFIX,
    DELTA_SUFFIX,
    LEGACY_DATA_SUFFIX,
    MAX_PROBLEMS_PER_FILE,
    Shard,
    change_record_problem,
    ledger_of,
    ledger_segment,
    tombstone_problem,
)


class Verifying(SnapshotFolder):
    """Checking every file and line of a version."""

    def verify(self, number: int | None = None) -> Verification:
        current = self._current_number()
        if current is None:
            raise StoreError(f"store {self.url} has no published version")
        if number is None and current not in self._manifest_numbers():
            # Every other command fails on it too; older versions may be sound.
            problem = (
                f"{CURRENT} names version {current}, which versions/ does not hold; "
                f"restore it from a backup, or write a kept version's number in {CURRENT} "
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
        segments = ledger_of(manifest)
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
            found, wrong = ledger_segment(segment, data)
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
            if not (name.startswith("bucket-") and name.endswith(CHANGES_SUFFIX)):
                problems.append(f"{shard.path}: listed as a change segment")
                continue
            bucket = int(name[len("bucket-") : -len(CHANGES_SUFFIX)])
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
                summing = Summing(raw, writing=False)
                for n, line in enumerate(io.BufferedReader(summing, BLOCK), 1):
                    problem = change_record_problem(line, previous, bucket, self.buckets)
                    previous = line.partition(records.SEPARATOR)[0]
                    if problem is not None:
                        bad += 1
                        if bad <= MAX_PROBLEMS_PER_FILE:
                            problems.append(f"{shard.path} line {n}: {problem}")
            if bad > MAX_PROBLEMS_PER_FILE:
                problems.append(f"{shard.path}: {bad - MAX_PROBLEMS_PER_FILE:,} more bad lines")
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
        delta = shard.path.endswith(DELTA_SUFFIX)
        name = os.path.basename(shard.path)
        suffix = DELTA_SUFFIX if delta else DATA_SUFFIX
        if name != f"bucket-{bucket:05d}{suffix}" and not (
            shard.lines is None and name == f"bucket-{bucket:05d}{LEGACY_DATA_SUFFIX}"
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
            summing = Summing(raw, writing=False)
            for n, line in enumerate(io.BufferedReader(summing, BLOCK), 1):
                dead = delta and segments.is_tombstone(line)
                problem = tombstone_problem(line) if dead else records.problem(line)
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
                    if bad <= MAX_PROBLEMS_PER_FILE:
                        problems.append(f"{shard.path} line {n}: {problem}")
        if bad > MAX_PROBLEMS_PER_FILE:
            problems.append(f"{shard.path}: {bad - MAX_PROBLEMS_PER_FILE:,} more bad lines")
        complete = n - (summing.last != b"\n")  # lines with their newline
        mismatch = shard.mismatch(complete, summing.bytes, summing.crc32)
        if mismatch:
            problems.append(mismatch)
        return problems, n
