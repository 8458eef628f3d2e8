"""The import's steps on this machine, without Beam: one process per usable core.

    inputs ──plan_for──► ranges of the input, in input order
    forked workers (`forked_workers`): check the ranges they claim, then
              apply the buckets they are given (`local_steps`)
    this process, meanwhile: hash_content ─► decide (the ledger) ─► go
    Finalizer ─► the report

The same steps as the Beam pipeline (`pipelines.beam_pipeline`), through
the same Beam-free functions (`inputs.content`, `transforms.steps.check_lines`,
`batches.in_input_order`, `apply_bucket`, `decisions`, `reject_files`,
`finalize`), so a run means the same whichever engine runs it. What it
leaves out is what one machine does not need: Beam's start-up (a second to
import it in each process), and a shuffle of every line through a runner.

From `runner_choice.PARALLEL_MIN_BYTES` of local input, workers forked from
this process (`runner_choice.local_workers`: as many as the cores it may
use) check the input while this one hashes the inputs and asks the ledger;
they apply only if every input is to be applied (else they are stopped and
the run starts again over the inputs it applies). Below that size, or on
one core, this process does it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from profile_import.core.commands import CommandChecker
from profile_import.core.locations import is_remote
from profile_import.inputs.content import hash_content
from profile_import.inputs.plan import InputFile, InputSplit, contiguous_parts
from profile_import.runners import runner_choice
from profile_import.transforms.steps import progress
from profile_import.transforms.steps.decisions import Decided, decide
from profile_import.transforms.steps.finalize import add_counts, write_report
from profile_import.transforms.steps.gc_pause import paused

from .forked_workers import in_workers
from .job import ImportJob
from .local_steps import (
    Checked,
    InProcessError,
    PerInput,
    apply,
    check,
    counted,
    first_line,
    write_rejects,
)

RUNNER = "InProcess"


def in_one(job: ImportJob, checker: CommandChecker, splits: Sequence[InputSplit]) -> Checked:
    """The whole run in this process."""
    part = check(job, checker, splits)
    with counted(part.counts):
        reject_files = write_rejects(job, part)
        buckets = {bucket: [(*part.position, lines)] for bucket, lines in part.buckets.items()}
        return Checked(part.counts, reject_files, apply(job, buckets))


class RunFailed(Exception):
    """The run failed, nothing is published: its cause in one line, what it
    read and checked when every input was (per input), and what it decided
    of the inputs when it did."""

    def __init__(self, message: str, counts: PerInput | None, decided: Decided | None) -> None:
        super().__init__(message)
        self.counts = counts
        self.decided = decided


# The ranges the workers claim one at a time: at least this many a worker,
# so that the last ones to finish end close together, and at most this
# many bytes each.
RANGES_PER_WORKER = 8
MAX_RANGE_BYTES = 4 << 20


@dataclass(frozen=True)
class Plan:
    """The inputs as ranges in input order, and how many processes check them."""

    ranges: list[InputSplit]
    workers: int


def plan_for(inputs: Sequence[InputFile]) -> Plan:
    """One process (`runner_choice.local_workers`), and each input read whole,
    when an input is not a local file of known size; else the inputs cut in
    ranges of at most `MAX_RANGE_BYTES`, `RANGES_PER_WORKER` a worker or
    more. No range when there is no input."""
    if any(f.size is None or is_remote(f.location) for f in inputs):
        workers = 1
    else:
        size = sum(f.size or 0 for f in inputs)
        workers = runner_choice.local_workers(size)
    if workers == 1:
        return Plan([s for part in contiguous_parts(inputs, 1) for s in part], 1)
    count = max(workers * RANGES_PER_WORKER, -(-size // MAX_RANGE_BYTES))
    return Plan([s for part in contiguous_parts(inputs, count) for s in part], workers)


def run(job: ImportJob) -> dict[str, Any]:
    """Runs the import and returns its report, written where the run was told."""
    finalizer = job.finalizer
    ctx = finalizer.ctx
    params = job.transport_params or None
    checker = job.check.build()
    listed = frozenset(f.index for f in ctx.inputs)
    decided: Decided | None = None

    def decide_inputs() -> Decided:
        hashes = [hash_content(f, params) for f in ctx.inputs]
        return decide(
            hashes,
            finalizer.store,
            finalizer.parent,
            job.semantics,
            allow_reapply=job.allow_reapply,
            input_count=len(ctx.inputs),
        )

    def applies_all() -> bool:
        nonlocal decided
        decided = decide_inputs()
        return decided.applied == listed

    done: Checked | None = None
    try:
        with paused():
            plan = plan_for(ctx.inputs)
            if plan.workers > 1:
                # The workers check while this process hashes the inputs and
                # asks the ledger; they apply only if it applies every input.
                done = in_workers(job, checker, plan.ranges, plan.workers, applies_all)
                if done is None:
                    progress.clear(job.progress_dir)  # what the stopped workers read
            if done is None:
                decided = decided or decide_inputs()
                applied = [f for f in ctx.inputs if f.index in decided.applied]
                plan = plan_for(applied)
                if plan.workers > 1:
                    done = in_workers(job, checker, plan.ranges, plan.workers, lambda: True)
                else:
                    done = in_one(job, checker, plan.ranges)
    except Exception as e:
        raise RunFailed(first_line(e), getattr(e, "counts", None), decided) from e
    if done is None or decided is None:  # cannot be: each path above sets both
        raise InProcessError("the run ended without a result")
    # The report names the processes that did the work.
    ctx = replace(ctx, workers=done.processes)
    finalizer = replace(finalizer, ctx=ctx)
    report = finalizer.finalize(decided, done.counts, add_counts(done.results), done.reject_files)
    write_report(ctx, report)
    return report
