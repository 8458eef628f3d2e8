"""The profile import pipeline.

    splits ──ParseCommands──► (bucket, batch) ──ApplyCommands──► new buckets in the store
                  │
                  └─ rejects ──WriteRejects──► reject files in the run's work folder

`build` adds these steps to a pipeline and returns; running it, and
publishing or discarding its result, is the launcher's job
(`profile_import.runners.execution`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from profile_import.core.commands import CheckSettings
from profile_import.inputs.plan import InputSplit
from profile_import.stores.base import BucketSink, BucketSource
from profile_import.transforms.apply import ApplyCommands
from profile_import.transforms.parse import ParseCommands
from profile_import.transforms.rejects import WriteRejects


@dataclass(frozen=True)
class ImportJob:
    """Everything the pipeline needs, decided before it is built."""

    splits: list[InputSplit]
    input_count: int
    check: CheckSettings
    buckets: int
    source: BucketSource
    sink: BucketSink | None  # None: a dry run writes nothing
    now: str  # the execution's start time, stamped on what it changes
    work_dir: str
    progress: bool = False
    spill: bool = False  # shuffle batches through files in work_dir (transforms.batches)
    transport_params: dict[str, Any] = field(default_factory=dict)

    @property
    def rejects_dir(self) -> str:
        return os.path.join(self.work_dir, "rejects")

    @property
    def spill_dir(self) -> str | None:
        return os.path.join(self.work_dir, "shuffle") if self.spill else None

    @property
    def progress_dir(self) -> str | None:
        return os.path.join(self.work_dir, "progress") if self.progress else None


def build(pipeline: beam.Pipeline, job: ImportJob) -> beam.Pipeline:
    """Adds the import's steps to `pipeline` and returns it, not run."""
    parsed = pipeline | "ParseCommands" >> ParseCommands(
        job.splits,
        job.check,
        job.buckets,
        job.input_count,
        job.progress_dir,
        job.transport_params or None,
        job.spill_dir,
    )
    _ = parsed.commands | "ApplyCommands" >> ApplyCommands(
        job.source,
        job.sink,
        job.now,
        job.progress_dir,
    )
    _ = parsed.rejects | "WriteRejects" >> WriteRejects(job.rejects_dir)
    return pipeline
