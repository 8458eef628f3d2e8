"""The import's steps on this machine, without Beam: one process per usable core.

    inputs ──contiguous_parts──► ranges of the input, in input order
    worker k: claims a range ─► checked_by_bucket ─► its lines by bucket ─► the next range...
              once every range is checked: first_lines, share_buckets
              ─ go ─► hands each worker the lines of the buckets it applies
              ─► apply_lines, bucket after bucket, its parts in_input_order
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
the run starts again over the inputs it applies). The input is cut in
ranges, `RANGES_PER_WORKER` a worker or more, which the workers claim one
at a time: a worker on a slower or busier core checks fewer, and all end
together. A range is checked as if it started its input; its lines are
numbered once every range is, from the lines each holds (its rejects are
written then). The buckets are then shared out by their lines, largest
first, so that the folds end together too. A worker keeps each accepted
line as read, hands the lines of the buckets another worker applies
through a file that one maps, and applies its own. Below that size, or on
one core, this process does it all.

The processes are `multiprocessing`'s (forked: the schemas, the settings and
the store's handles are already in memory). What it lacks is kept here: a
worker dies with this process (`die_with_parent`), and this process watches each
worker's result and its exit together, so a worker that fails or dies fails
the run at once, in one line, and publishes nothing.
"""

from __future__ import annotations

import itertools
import marshal
import mmap
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from profile_import.core.commands import CommandChecker
from profile_import.core.locations import is_remote
from profile_import.core.numbering import first_lines_after
from profile_import.inputs.content import hash_content
from profile_import.inputs.plan import InputFile, InputSplit, contiguous_parts
from profile_import.runners import runner_choice
from profile_import.runners.parent_death import die_with_parent
from profile_import.transforms.steps import metrics, progress
from profile_import.transforms.steps.apply_bucket import apply_lines
from profile_import.transforms.steps.batches import in_input_order
from profile_import.transforms.steps.check_lines import BucketLines, SplitTally, checked_by_bucket
from profile_import.transforms.steps.decisions import Decided, decide
from profile_import.transforms.steps.finalize import add_counts, write_report
from profile_import.transforms.steps.gc_pause import paused
from profile_import.transforms.steps.reject_files import RejectFile, write_reject_file
from profile_import.transforms.steps.scratch import folder as scratch_folder

from .job import ImportJob

RUNNER = "InProcess"

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


def in_one(job: ImportJob, checker: CommandChecker, splits: Sequence[InputSplit]) -> Checked:
    """The whole run in this process."""
    part = check(job, checker, splits)
    with counted(part.counts):
        reject_files = write_rejects(job, part)
        buckets = {bucket: [(*part.position, lines)] for bucket, lines in part.buckets.items()}
        return Checked(part.counts, reject_files, apply(job, buckets))


class Crew:
    """What the workers of a run share, made before they are forked: the
    ranges of the input, the next one to claim, the lines each range holds
    once checked, two barriers, the go.

    A worker claims ranges one after another until none is left, so that
    every worker stays busy to the end whatever the speed of its core. It
    waits for the others at a barrier twice (every range checked, which
    numbers the lines; its lines handed over) and for this process's go
    once; a worker that fails or dies leaves the others waiting, and this
    process stops them all.
    """

    def __init__(
        self, ranges: Sequence[InputSplit], workers: int, buckets: int, folder: str
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.ranges = ranges
        self.size = workers
        self.folder = folder
        self._next = context.Value("q", 0)
        self._lines = context.Array("q", len(ranges) or 1, lock=False)
        self._bucket_lines = context.Array("q", buckets)
        self._owners: list[int] = []
        self.checked = context.Barrier(workers)
        self.handed = context.Barrier(workers)
        self.go = context.Event()

    def claim(self) -> int | None:
        """The index of the next range to check (None: none left)."""
        with self._next.get_lock():
            index: int = self._next.value
            if index >= len(self.ranges):
                return None
            self._next.value = index + 1
        return index

    def checked_range(self, index: int, part: Part) -> None:
        """What a range holds: its lines, and the accepted ones of each bucket."""
        self._lines[index] = sum(counts.get("lines", 0) for counts in part.counts.values())
        with self._bucket_lines.get_lock():
            for bucket, lines in part.buckets.items():
                self._bucket_lines[bucket] += len(lines.keys)

    def share_buckets(self) -> None:
        """Who applies which bucket, once every range is checked: the largest
        bucket first, each to the worker with the fewest lines so far, so
        that the workers end their folds close together. Every worker
        reckons the same."""
        loads = [0] * self.size
        self._owners = [0] * len(self._bucket_lines)
        lines: list[int] = self._bucket_lines[:]
        for bucket in sorted(range(len(lines)), key=lambda b: (-lines[b], b)):
            worker = loads.index(min(loads))
            self._owners[bucket] = worker
            loads[worker] += lines[bucket]

    def first_lines(self) -> list[int]:
        """The number of each range's first line, once every range is checked
        (`numbering.first_lines_after`: from the lines each range holds)."""
        return first_lines_after(
            (split.input_index, self._lines[index]) for index, split in enumerate(self.ranges)
        )

    def owner(self, bucket: int) -> int:
        """Which worker applies a bucket (`share_buckets`)."""
        return self._owners[bucket]

    def _path(self, sender: int, receiver: int, what: str) -> str:
        return os.path.join(self.folder, f"{sender}-to-{receiver}.{what}")

    def hand_over(self, number: int, parts: Sequence[Part]) -> dict[int, list[BucketPart]]:
        """Hands every other worker the lines of its buckets; returns, once
        every worker has, the parts of the buckets this one owns."""
        for receiver in range(self.size):
            if receiver != number:
                self._send(number, receiver, parts)
        mine: dict[int, list[BucketPart]] = {}
        for part in parts:
            for bucket, lines in part.buckets.items():
                if self.owner(bucket) == number:
                    mine.setdefault(bucket, []).append((*part.position, lines))
            part.buckets.clear()  # what was handed over: its memory serves the folds
        self.handed.wait()
        for sender in range(self.size):
            if sender != number:
                for bucket, handed in self._receive(sender, number).items():
                    mine.setdefault(bucket, []).extend(handed)
        # Left to the process's exit, like everything it built (see `_worker`).
        LEFT_TO_EXIT.append(mine)
        return mine

    def _send(self, sender: int, receiver: int, parts: Sequence[Part]) -> None:
        """The lines one after another in one file, their parts, buckets,
        keys, kinds and ends in another (marshal: the fastest for lists of
        bytes)."""
        header = []
        end = 0
        # Written line by line through one buffer: joining them first would
        # copy them all into new memory, then into the file.
        with open(self._path(sender, receiver, "lines"), "wb", buffering=1 << 20) as f:
            for part in parts:
                handed = []
                for bucket, lines in part.buckets.items():
                    if self.owner(bucket) != receiver:
                        continue
                    f.writelines(lines.lines)
                    ends = list(itertools.accumulate(map(len, lines.lines), initial=end))
                    handed.append((bucket, lines.keys, ends, bytes(lines.kinds)))
                    end = ends[-1]
                header.append((part.position, handed))
        with open(self._path(sender, receiver, "keys"), "wb") as f:
            f.write(marshal.dumps(header))

    def _receive(self, sender: int, receiver: int) -> dict[int, list[BucketPart]]:
        """What `sender` handed over, by bucket: views of its file, mapped for
        as long as this process runs, parsed straight from the mapping."""
        with open(self._path(sender, receiver, "keys"), "rb") as f:
            header = marshal.loads(f.read())
        with open(self._path(sender, receiver, "lines"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        LEFT_TO_EXIT.append(mapped)
        view = memoryview(mapped)
        handed: dict[int, list[BucketPart]] = {}
        for (input_index, start), buckets in header:
            for bucket, keys, ends, kinds in buckets:
                if len(ends) != len(keys) + 1 or len(kinds) != len(keys) or ends[-1] > size:
                    raise InProcessError(f"worker {sender + 1} handed over a damaged list of lines")
                lines: list[bytes | memoryview] = [view[a:b] for a, b in itertools.pairwise(ends)]
                part = (input_index, start, BucketLines(keys, bytearray(kinds), lines))
                handed.setdefault(bucket, []).append(part)
        return handed


# What a worker built and keeps to its end: it ends with `os._exit`, and the
# system takes its memory back at once, where freeing a million lines and
# keys object by object costs 0.4 s at 1M lines (5% of the run).
LEFT_TO_EXIT: list[Any] = []


def work(job: ImportJob, checker: CommandChecker, crew: Crew, number: int) -> Checked:
    """One worker's share of the run: check the ranges it claims, hand over,
    apply its buckets."""
    parts: list[tuple[int, Part]] = []
    while (index := crew.claim()) is not None:
        # Checked as if it started its input: numbered once every range is.
        part = check(job, checker, [replace(crew.ranges[index], first_line=1)])
        crew.checked_range(index, part)
        parts.append((index, part))
    counts = per_input(part.counts for _, part in parts)
    # For the report of a run that fails from here (`counts_checked`).
    # Whole or absent under its name: the parent reads it whenever one fails.
    path = os.path.join(crew.folder, f"counts-{number}.pickle")
    with open(f"{path}.part", "wb") as f:
        pickle.dump(counts, f)
    os.replace(f"{path}.part", path)
    crew.checked.wait()
    numbers = crew.first_lines()
    crew.share_buckets()
    crew.go.wait()
    buckets = crew.hand_over(number, [part for _, part in parts])
    reject_files = [f for i, part in parts for f in write_rejects(job, part, numbers[i])]
    return Checked(counts, reject_files, apply(job, buckets))


def _worker(
    job: ImportJob, checker: CommandChecker, crew: Crew, number: int, out: Connection, parent: int
) -> None:
    """A forked worker's life: its result, or its error in one line, to `out`."""
    code = 1
    try:
        die_with_parent(parent)
        message: tuple[str, Any] = ("done", work(job, checker, crew, number))
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported to this process, which fails the run
        message = ("failed", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    try:
        out.send(message)
    finally:
        os._exit(code)


PerInput = dict[int, dict[str, int]]


def per_input(counts: Iterable[PerInput]) -> PerInput:
    """Counts per input, summed."""
    every = list(counts)
    indexes = sorted({index for one in every for index in one})
    return {i: add_counts(one.get(i, {}) for one in every) for i in indexes}


# How long a failed run waits for the other workers' counts of what they
# checked, for its report, before it reports none.
COUNTS_GRACE_SECONDS = 30.0


class InProcessError(Exception):
    """A worker of a local run failed or died: nothing is published."""

    def __init__(
        self, message: str, counts: PerInput | None = None, *, reported: bool = False
    ) -> None:
        super().__init__(message)
        self.counts = counts  # per input, when every input was read and checked
        # A worker's own error (a full disk, say), not its death or an interrupt.
        self.reported = reported


class RunFailed(Exception):
    """The run failed, nothing is published: its cause in one line, what it
    read and checked when every input was (per input), and what it decided
    of the inputs when it did."""

    def __init__(self, message: str, counts: PerInput | None, decided: Decided | None) -> None:
        super().__init__(message)
        self.counts = counts
        self.decided = decided


def _first_line(error: BaseException) -> str:
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
        raise InProcessError(_first_line(e), counts) from e


def counts_checked(folder: str, workers: int) -> PerInput | None:
    """What every worker read and checked, if every worker finished checking."""
    counts: list[PerInput] = []
    for number in range(workers):
        try:
            with open(os.path.join(folder, f"counts-{number}.pickle"), "rb") as f:
                counts.append(pickle.load(f))
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
    return per_input(counts)


class Workers:
    """The forked workers of one run, watched together."""

    def __init__(self, job: ImportJob, checker: CommandChecker, crew: Crew) -> None:
        context = multiprocessing.get_context("fork")
        self.crew = crew
        self.processes: list[Any] = []
        self.results: list[Connection] = []
        for number in range(crew.size):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker,
                args=(job, checker, crew, number, writer, os.getpid()),
                name=f"profile-import worker {number + 1}",
                daemon=True,
            )
            self.processes.append(process)
            self.results.append(reader)
            process.start()
            writer.close()

    def wait(self) -> list[Checked]:
        """Every worker's result, in order; the first worker that fails or
        dies raises `InProcessError` at once, with its cause."""
        done: dict[int, Checked] = {}
        watched: dict[Any, int] = {}
        for number, (process, reader) in enumerate(zip(self.processes, self.results, strict=True)):
            watched[reader] = watched[process.sentinel] = number
        while len(done) < len(self.processes):
            for ready in wait(list(watched)):
                number = watched[ready]
                if number in done:
                    continue
                reader = self.results[number]
                if ready is not reader and not reader.poll():
                    raise InProcessError(self._died(number))
                try:
                    status, value = reader.recv()
                except (EOFError, OSError):
                    raise InProcessError(self._died(number)) from None
                if status != "done":
                    raise InProcessError(value, reported=True)
                done[number] = value
        return [done[number] for number in range(len(self.processes))]

    def _died(self, number: int) -> str:
        process = self.processes[number]
        process.join(1)
        code = process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"ended with status {code}"
        return f"worker {number + 1} of {len(self.processes)} {how} before it finished"

    def checked(self, folder: str, grace: float) -> None:
        """Waits, `grace` seconds at most, until every worker has counted what
        it checked (`work`) or has ended."""
        # A worker waiting for the failed one at a barrier would wait for ever.
        self.crew.checked.abort()
        self.crew.handed.abort()
        deadline = time.monotonic() + grace
        for number, process in enumerate(self.processes):
            path = os.path.join(folder, f"counts-{number}.pickle")
            while process.is_alive() and not os.path.exists(path):
                if time.monotonic() > deadline:
                    return
                process.join(0.05)

    def stop(self) -> None:
        """Ends every worker still running (the run failed, was interrupted or
        applies fewer inputs), and waits for it."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process, reader in zip(self.processes, self.results, strict=True):
            process.join()
            process.close()
            reader.close()


def in_workers(
    job: ImportJob,
    checker: CommandChecker,
    plan: Plan,
    go: Callable[[], bool],
) -> Checked | None:
    """The plan's ranges in forked workers at once, each checking the ranges
    it claims and applying the buckets it owns; none hands over before
    `go()`, called here meanwhile, says to (None: it did not, nothing was
    applied).

    Input order holds for every identifier: a bucket's parts are applied in
    the order of the input ranges they come from (`in_input_order`),
    whichever worker checked or applies them.
    """
    # The hand-over files: removed whatever ends the run, or by the next run.
    with scratch_folder("profile-import-workers-") as folder:
        workers: Workers | None = None
        try:
            crew = Crew(plan.ranges, plan.workers, job.buckets, folder)
            workers = Workers(job, checker, crew)
            if not go():
                return None
            crew.go.set()
            done = workers.wait()
        except Exception as e:
            if workers is not None and isinstance(e, InProcessError) and e.reported:
                # A worker failed while the others still check: they finish
                # checking before the report counts them (a death or an
                # interrupt ends the run at once).
                workers.checked(folder, COUNTS_GRACE_SECONDS)
            counts = counts_checked(folder, plan.workers)
            if counts is None:
                raise
            with counted(counts):
                raise
        finally:
            if workers is not None:
                workers.stop()
    return Checked(
        counts=per_input(one.counts for one in done),
        reject_files=[f for one in done for f in one.reject_files],
        results=[r for one in done for r in one.results],
        processes=len(done),
    )


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
                done = in_workers(job, checker, plan, applies_all)
                if done is None:
                    progress.clear(job.progress_dir)  # what the stopped workers read
            if done is None:
                decided = decided or decide_inputs()
                applied = [f for f in ctx.inputs if f.index in decided.applied]
                plan = plan_for(applied)
                if plan.workers > 1:
                    done = in_workers(job, checker, plan, lambda: True)
                else:
                    done = in_one(job, checker, plan.ranges)
    except Exception as e:
        raise RunFailed(_first_line(e), getattr(e, "counts", None), decided) from e
    if done is None or decided is None:  # cannot be: each path above sets both
        raise InProcessError("the run ended without a result")
    # The report names the processes that did the work.
    ctx = replace(ctx, workers=done.processes)
    finalizer = replace(finalizer, ctx=ctx)
    report = finalizer.finalize(decided, done.counts, add_counts(done.results), done.reject_files)
    write_report(ctx, report)
    return report
