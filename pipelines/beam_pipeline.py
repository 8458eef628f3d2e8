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

import apache_beam as beam

from profile_import.transforms.apply_commands import ApplyCommands
from profile_import.transforms.commit_import import CommitImport
from profile_import.transforms.decide_inputs import DecideInputs
from profile_import.transforms.hash_inputs import HashInputs
from profile_import.transforms.number_splits import NumberSplits
from profile_import.transforms.parse_commands import ParseCommands
from profile_import.transforms.write_rejects import WriteRejects

from .job import ImportJob

__all__ = ["ImportJob", "build"]


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
        job.check, job.buckets, job.progress_dir, params, job.spill_dir, decided, job.counts_dir
    )
    sink = finalizer.staging.sink if finalizer.staging is not None else None
    buckets = parsed.commands | "ApplyCommands" >> ApplyCommands(
        job.source, sink, finalizer.ctx.started_at, job.progress_dir, finalizer.ctx.changes_dir
    )
    reject_files = parsed.rejects | "WriteRejects" >> WriteRejects(job.rejects_dir)
    _ = pipeline | "CommitImport" >> CommitImport(
        finalizer, decided, parsed.counts, buckets, reject_files
    )
    return pipeline
