"""Running raw lines through the real composites: ParseCommands, ApplyCommands, WriteRejects.

The store side is a folder of bucket files behind the `stores.base` bucket
interfaces, so what is checked is the pipeline's own work, not a store's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline

from profile_import.core import records
from profile_import.core.commands import CheckSettings
from profile_import.core.identifiers import Identifier
from profile_import.stores.base import BucketSink, BucketSource
from profile_import.transforms.apply_commands import ApplyCommands
from profile_import.transforms.parse_commands import ParseCommands
from profile_import.transforms.steps import metrics
from profile_import.transforms.write_rejects import WriteRejects

from .helpers import plan

NOW = "2026-11-23T00:00:00.000Z"
COUNTS = ("lines", "blank", "accepted", "rejected", "upserts", "deletes")


def _bucket_path(folder: str, bucket: int) -> str:
    return os.path.join(folder, f"{bucket}.lines")


def _read_lines(folder: str, bucket: int) -> list[bytes]:
    path = _bucket_path(folder, bucket)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return list(f)


class FolderSource(BucketSource):
    def __init__(self, folder: str) -> None:
        self._folder = folder

    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        wanted = set(keys)
        for line in _read_lines(self._folder, bucket):
            if records.split(line)[0] in wanted:
                yield line


class FolderSink(BucketSink):
    """Writes each bucket whole: its file with the changes applied."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        by_key = {records.split(line)[0]: line for line in _read_lines(self._folder, bucket)}
        by_key.update((records.split(line)[0], line) for line in lines)
        for key in deleted:
            by_key.pop(key, None)
        os.makedirs(self._folder, exist_ok=True)
        with open(_bucket_path(self._folder, bucket), "wb") as f:
            f.writelines(by_key[key] for key in sorted(by_key))


@dataclass
class Imported:
    counts: dict[str, int]
    rejects: list[dict[str, Any]]  # in input order
    profiles: dict[bytes, dict[str, Any]]  # key -> user_profile

    def profile(self, identifier: Identifier) -> dict[str, Any] | None:
        return self.profiles.get(identifier.key)

    def reject_codes(self) -> dict[int, str]:
        return {r["line"]: r["code"] for r in self.rejects}


def import_lines(
    folder: Path,
    lines: Iterable[bytes],
    settings: CheckSettings | None = None,
    buckets: int = 4,
    split_bytes: int = 1 << 20,
) -> Imported:
    """Writes `lines` (joined by newlines) to a file and imports it onto an empty store."""
    path = folder / "input.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _, splits = plan([str(path)], split_bytes=split_bytes)
    data, rejects_dir = str(folder / "buckets"), str(folder / "rejects")
    p = TestPipeline(runner=FnApiRunner())
    parsed = p | beam.Create(splits) | ParseCommands(settings or CheckSettings(), buckets)
    _ = parsed.commands | ApplyCommands(FolderSource(data), FolderSink(data), NOW)
    _ = parsed.rejects | WriteRejects(rejects_dir)
    result = p.run()
    result.wait_until_finish()

    counts: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        counts[name] = counts.get(name, 0) + counter.committed
    rejects = [
        orjson.loads(line)
        for name in sorted(os.listdir(rejects_dir) if os.path.isdir(rejects_dir) else [])
        for line in (Path(rejects_dir) / name).read_bytes().splitlines()
    ]
    profiles: dict[bytes, dict[str, Any]] = {}
    for name in os.listdir(data) if os.path.isdir(data) else []:
        for line in (Path(data) / name).read_bytes().splitlines(keepends=True):
            key, record = records.split(line)
            profiles[key] = records.decode_record(record).profile
    return Imported(counts, rejects, profiles)


def assert_counts_add_up(imported: Imported, lines: int) -> None:
    c = {name: imported.counts.get(name, 0) for name in COUNTS}
    assert c["lines"] == lines, c
    assert c["lines"] == c["blank"] + c["accepted"] + c["rejected"], c
    assert c["accepted"] == c["upserts"] + c["deletes"], c
    assert c["rejected"] == len(imported.rejects), c
    assert imported.counts.get(metrics.COMMANDS_APPLIED, 0) == c["accepted"], imported.counts
