"""The profile import pipeline, from the listed inputs to the final report.

    inputs ──NumberSplits──► splits ──ParseCommands──► (bucket, batch) ──ApplyCommands──┐
      │                               ▲  │   └─ counts per split ─────────────────────┤
      │                               │  └─ rejects ──WriteRejects──► reject files ───┤
      └──HashInputs──► content hashes ──DecideInputs──► decided ──────────────────────┤
                          (ParseCommands reads only the inputs the run applies)        │
                                                                    CommitImport ◄─────┘
                                                     check, publish or discard, report

`build` adds these steps to a pipeline and returns it, not run: the same
pipeline runs under the command line (which waits and prints the report),
on the portable runner, or on Dataflow with nobody waiting. The launcher
(`profile_import.runners`) only lists the inputs, stages the run in the
store, builds and launches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from profile_import.core.commands import CheckSettings
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES
from profile_import.stores.base import BucketSource
from profile_import.transforms.apply import ApplyCommands
from profile_import.transforms.commit import CommitImport, Finalizer
from profile_import.transforms.idempotency import DecideInputs
from profile_import.transforms.parse import ParseCommands
from profile_import.transforms.rejects import WriteRejects
from profile_import.transforms.scan import HashInputs, NumberSplits


@dataclass(frozen=True)
class ImportJob:
    """Everything the pipeline needs, decided before it is built."""

    finalizer: Finalizer  # the run's context, its store, parent and staging
    check: CheckSettings
    semantics: Mapping[str, Any]  # the options that change what a line means (SPEC §4)
    allow_reapply: bool
    buckets: int
    source: BucketSource  # the parent version's buckets
    work_dir: str
    split_bytes: int = DEFAULT_SPLIT_BYTES
    # Where local workers drop progress markers for the display (None: none);
    # the launcher's own folder, which outlives the run's staging.
    progress_dir: str | None = None
    spill: bool = False  # shuffle batches through files in work_dir (transforms.batches)
    transport_params: dict[str, Any] = field(default_factory=dict)
    # Where the spill goes when the work folder is in a bucket (a store there)
    # and the workers share this machine's disk: a local folder.
    spill_root: str | None = None

    @property
    def rejects_dir(self) -> str:
        return os.path.join(self.work_dir, "rejects")

    @property
    def spill_dir(self) -> str | None:
        return os.path.join(self.spill_root or self.work_dir, "shuffle") if self.spill else None


def build(pipeline: beam.Pipeline, job: ImportJob) -> beam.Pipeline:
    """Adds the import's steps to `pipeline` and returns it, not run."""
    finalizer = job.finalizer
    params = job.transport_params or None
    inputs = pipeline | "ListedInputs" >> beam.Create(list(finalizer.ctx.inputs))
    splits = inputs | "NumberSplits" >> NumberSplits(job.split_bytes, params)
    decided = (
        inputs
        | "HashInputs" >> HashInputs(params)
        | "DecideInputs"
        >> DecideInputs(
            finalizer.store,
            finalizer.parent,
            job.semantics,
            job.allow_reapply,
            len(finalizer.ctx.inputs),
        )
    )
    parsed = splits | "ParseCommands" >> ParseCommands(
        job.check, job.buckets, job.progress_dir, params, job.spill_dir, decided
    )
    sink = finalizer.staging.sink if finalizer.staging is not None else None
    buckets = parsed.commands | "ApplyCommands" >> ApplyCommands(
        job.source, sink, finalizer.ctx.started_at, job.progress_dir
    )
    reject_files = parsed.rejects | "WriteRejects" >> WriteRejects(job.rejects_dir)
    _ = pipeline | "CommitImport" >> CommitImport(
        finalizer, decided, parsed.counts, buckets, reject_files
    )
    return pipeline
