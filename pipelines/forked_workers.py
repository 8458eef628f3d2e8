"""Forked workers of an import without Beam: one per usable core.

    worker k: claims a range ─► check ─► its lines by bucket ─► the next range...
              once every range is checked: first_lines, share_buckets
              ─ go ─► hands each worker the lines of the buckets it applies
              ─► apply, bucket after bucket, its parts in_input_order

The input is cut in ranges (`in_process.plan_for`) that the workers claim one
at a time: a worker on a slower or busier core checks fewer, and all end
together. A range is checked as if it started its input; its lines are
numbered once every range is, from the lines each holds (its rejects are
written then). The buckets are then shared out by their lines, largest
first, so that the folds end together too. A worker keeps each accepted
line as read, hands the lines of the buckets another worker applies through
a file that one maps, framed as the Beam pipeline's shuffle frames them
(`transforms/steps/batches.py`), and applies its own.

The processes are `multiprocessing`'s (forked: the schemas, the settings and
the store's handles are already in memory). What it lacks is kept here: a
worker dies with the launcher (`die_with_parent`), and the launcher watches
each worker's result and its exit together, so a worker that fails or dies
fails the run at once, in one line, and publishes nothing.
"""

from __future__ import annotations

import contextlib
import marshal
import mmap
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from profile_import.core.commands import CommandChecker
from profile_import.core.numbering import first_lines_after
from profile_import.inputs.plan import InputSplit
from profile_import.runners.parent_death import die_with_parent
from profile_import.transforms.steps import batches
from profile_import.transforms.steps.check_lines import BucketLines
from profile_import.transforms.steps.scratch import folder as scratch_folder

from .job import ImportJob
from .local_steps import (
    BucketPart,
    Checked,
    InProcessError,
    Part,
    PerInput,
    apply,
    check,
    counted,
    per_input,
    write_rejects,
)


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
        """Each part's lines of each bucket `receiver` applies, as the Beam
        pipeline's shuffle frames them (`batches.encode`): the frames one after
        another in one file, where each is in another (marshal)."""
        handed = []
        with contextlib.closing(batches.Spill(self._path(sender, receiver, "batches"))) as spill:
            for part in parts:
                for bucket, lines in part.buckets.items():
                    if self.owner(bucket) == receiver:
                        batch = batches.encode(
                            *part.position, lines.keys, lines.kinds, lines.lines, spill
                        )
                        handed.append((bucket, batch))
        with open(self._path(sender, receiver, "index"), "wb") as f:
            f.write(marshal.dumps(handed))

    def _receive(self, sender: int, receiver: int) -> dict[int, list[BucketPart]]:
        """What `sender` handed over, by bucket: views of its file, mapped for
        as long as this process runs."""
        with open(self._path(sender, receiver, "index"), "rb") as f:
            index: list[tuple[int, batches.CommandBatch]] = marshal.loads(f.read())
        with open(self._path(sender, receiver, "batches"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        LEFT_TO_EXIT.append(mapped)
        view = memoryview(mapped)
        handed: dict[int, list[BucketPart]] = {}
        for bucket, batch in index:
            try:
                keys, kinds, lines = batches.decoded(batches.in_file(batch, view))
            except batches.DamagedBatch as e:
                raise InProcessError(f"worker {sender + 1} handed over damaged lines: {e}") from e
            part = (batch[0], batch[1], BucketLines(keys, bytearray(kinds), lines))
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


# How long a failed run waits for the other workers' counts of what they
# checked, for its report, before it reports none.
COUNTS_GRACE_SECONDS = 30.0


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
    ranges: Sequence[InputSplit],
    count: int,
    go: Callable[[], bool],
) -> Checked | None:
    """The ranges in `count` forked workers at once, each checking the ranges
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
            crew = Crew(ranges, count, job.buckets, folder)
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
            counts = counts_checked(folder, count)
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
