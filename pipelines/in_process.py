"""The import's steps run in this process, without Beam: for small imports.

    inputs ──hash_content──► decide (ledger) ──checked_lines──► commands by bucket
        ──apply_bucket──► staged buckets, reject files ──Finalizer──► report

The same steps as the pipeline (`pipelines.import_profiles`), through the
same functions (`transforms.decisions`, `check_lines`, `apply_bucket`,
`reject_files`, `finalize`), so a run means the same whichever runs it.
What it leaves out is only what a small import does not need: Beam's
start-up (a second to import it, more to start workers), splitting inputs
into ranges, and shuffling lines between processes. Each line is parsed
once: its accepted command goes straight to its bucket, where the pipeline
ships the raw line and parses it again after the shuffle.
"""

from __future__ import annotations

from typing import Any

from profile_import.core.fold import Command
from profile_import.core.identifiers import bucket_of
from profile_import.inputs.plan import InputFile, InputSplit
from profile_import.inputs.scan import hash_content
from profile_import.transforms.apply_bucket import apply_bucket
from profile_import.transforms.check_lines import SplitTally, checked_lines
from profile_import.transforms.decisions import decide
from profile_import.transforms.finalize import add_counts, write_report
from profile_import.transforms.gc_pause import paused
from profile_import.transforms.reject_files import RejectFile, write_reject_file

from .job import ImportJob

RUNNER = "InProcess"


def whole_input(file: InputFile) -> InputSplit:
    """One input read whole, as one split starting at its first line."""
    name = "" if file.location == file.path else file.path
    return InputSplit(file.index, file.location, 0, None, 1, file.compression, name)


def run(job: ImportJob) -> dict[str, Any]:
    """Runs the import and returns its report, written where the run was told."""
    finalizer = job.finalizer
    ctx = finalizer.ctx
    params = job.transport_params or None
    hashes = [hash_content(f, params) for f in ctx.inputs]
    decided = decide(
        hashes,
        finalizer.store,
        finalizer.parent,
        job.semantics,
        allow_reapply=job.allow_reapply,
        input_count=len(ctx.inputs),
    )
    checker = job.check.build()
    # key -> its commands, in input order (bucketed once a key, not once a line).
    by_key: dict[bytes, list[Command]] = {}
    input_counts: dict[int, dict[str, int]] = {}
    reject_files: list[RejectFile] = []
    with paused():
        for file in ctx.inputs:
            if file.index not in decided.applied:
                continue  # applied before (or given twice): not read at all
            split = whole_input(file)
            tally = SplitTally()
            for accepted, _ in checked_lines(split, checker, job.check, tally, params):
                sequence = by_key.get(accepted.key)
                if sequence is None:
                    by_key[accepted.key] = sequence = []
                sequence.append(Command.from_object(accepted.obj))
            input_counts[file.index] = tally.counts()
            if tally.reject_lines:
                payload = b"".join(tally.reject_lines)
                reject_files.append(write_reject_file(job.rejects_dir, split.sequence, payload))
        commands: dict[int, dict[bytes, list[Command]]] = {}
        for key, sequence in by_key.items():
            bucket = bucket_of(key, job.buckets)
            in_bucket = commands.get(bucket)
            if in_bucket is None:
                commands[bucket] = in_bucket = {}
            in_bucket[key] = sequence
        del by_key
        sink = finalizer.staging.sink if finalizer.staging is not None else None
        source = job.source
        source.open()
        if sink is not None:
            sink.open()
        now = ctx.started_at
        results = []
        for bucket in sorted(commands):
            in_bucket = commands.pop(bucket)
            applied = sum(map(len, in_bucket.values()))
            results.append(apply_bucket(source, sink, bucket, in_bucket, applied, now))
    report = finalizer.finalize(decided, input_counts, add_counts(results), reject_files)
    write_report(ctx, report)
    return report
