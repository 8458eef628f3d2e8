"""One process's share of an import without Beam: check ranges of the
input, apply buckets, write rejects.

The launcher's process runs them for a small import (`pipelines.in_process`),
each forked worker for its share of a larger one (`pipelines.forked_workers`):
the same Beam-free steps as the pipeline's (`transforms.steps`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from profile_import.core.commands import CommandChecker
from profile_import.inputs.plan import InputSplit
from profile_import.transforms.steps import metrics, progress
from profile_import.transforms.steps.apply_bucket import apply_lines
from profile_import.transforms.steps.batches import in_input_order
from profile_import.transforms.steps.check_lines import BucketLines, SplitTally, checked_by_bucket
from profile_import.transforms.steps.finalize import add_counts
from profile_import.transforms.steps.reject_files import RejectFile, write_reject_file

from .job import ImportJob

# (input index, first byte): where a range of the input starts, which orders
# the ranges of a run as their lines (the workers number lines only once
# every range is checked).
Position = tuple[int, int]
# (input index, first byte of its range, the lines): one range's lines of a
# bucket, as `batches.in_input_order` orders them.
BucketPart = tuple[int, int, BucketLines]


@dataclass
class Part:
    """What checking a contiguous range of the input found: the accepted
    lines by bucket, counts per input, each split's tally of rejects."""

    position: Position  # where the part starts in the input
    buckets: dict[int, BucketLines] = field(default_factory=dict)
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    rejects: list[tuple[InputSplit, SplitTally]] = field(default_factory=list)


@dataclass
class Checked:
    """What one process checked and applied: counts per input, reject files,
    the results of the buckets it applied."""

    counts: dict[int, dict[str, int]]
    reject_files: list[RejectFile]
    results: list[dict[str, int]]
    processes: int = 1  # that did the work


def check(job: ImportJob, checker: CommandChecker, splits: Sequence[InputSplit]) -> Part:
    """Checks the splits, which follow each other in input order."""
    params = job.transport_params or None
    part = Part((splits[0].input_index, splits[0].start) if splits else (0, 0))
    for split in splits:
        tally = SplitTally()
        name = f"{split.input_index}-{split.start}"
        marker = progress.marker(job.progress_dir, name, split.size)
        checked_by_bucket(
            split,
            checker,
            job.check,
            tally,
            job.buckets,
            params,
            into=part.buckets,
            progress=marker,
        )
        index = split.input_index
        part.counts[index] = add_counts([part.counts.get(index, {}), tally.counts()])
        if tally.rejected:
            part.rejects.append((split, tally))
        progress.mark_members(job.progress_dir, f"buckets-{name}", part.buckets)
    return part


def apply(job: ImportJob, buckets: Mapping[int, Sequence[BucketPart]]) -> list[dict[str, int]]:
    """Applies each bucket's parts, in input order, bucket after bucket."""
    staging = job.finalizer.staging
    sink = staging.sink if staging is not None else None
    source = job.source
    source.open()
    if sink is not None:
        sink.open()
    now = job.finalizer.ctx.started_at
    changes_dir = job.finalizer.ctx.changes_dir
    results = []
    for bucket in sorted(buckets):
        lines = itertools.chain.from_iterable(
            zip(part.keys, part.kinds, part.lines, strict=True)
            for _, _, part in in_input_order(buckets[bucket])
        )
        result = apply_lines(source, sink, bucket, lines, now, changes_dir)
        progress.mark(job.progress_dir, f"apply-{bucket}", result[metrics.COMMANDS_APPLIED])
        results.append(result)
    return results


def write_rejects(job: ImportJob, part: Part, first_line: int | None = None) -> list[RejectFile]:
    """The part's reject files; `first_line`: the number of its first line,
    when it was checked as if it started its input."""
    files = []
    for split, tally in part.rejects:
        shift = 0 if first_line is None else first_line - 1
        lines = tally.reject_lines(split.display_name, redact=job.check.redact, shift=shift)
        sequence = (split.input_index, split.first_line + shift)
        files.append(write_reject_file(job.rejects_dir, sequence, b"".join(lines)))
    return files


PerInput = dict[int, dict[str, int]]


def per_input(counts: Iterable[PerInput]) -> PerInput:
    """Counts per input, summed."""
    every = list(counts)
    indexes = sorted({index for one in every for index in one})
    return {i: add_counts(one.get(i, {}) for one in every) for i in indexes}


class InProcessError(Exception):
    """A worker of a local run failed or died: nothing is published."""

    def __init__(
        self, message: str, counts: PerInput | None = None, *, reported: bool = False
    ) -> None:
        super().__init__(message)
        self.counts = counts  # per input, when every input was read and checked
        # A worker's own error (a full disk, say), not its death or an interrupt.
        self.reported = reported


def first_line(error: BaseException) -> str:
    """An error's first line, for a one-line message."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else repr(error)


@contextmanager
def counted(counts: PerInput) -> Iterator[None]:
    """A failure once every input was read and checked carries the counts."""
    try:
        yield
    except InProcessError as e:
        e.counts = e.counts or counts
        raise
    except Exception as e:
        raise InProcessError(first_line(e), counts) from e
