"""The import's steps run in this process, without Beam: imports that fit in memory.

    inputs ──hash_content──► decide (ledger) ──checked_lines──► accepted lines by bucket
        ──apply_lines──► staged buckets, reject files ──Finalizer──► report

The same steps as the pipeline (`pipelines.import_profiles`), through the
same functions (`transforms.decisions`, `check_lines`, `apply_bucket`,
`reject_files`, `finalize`), so a run means the same whichever runs it.
What it leaves out is what one machine does not need: Beam's start-up (a
second to import it in each process), splitting inputs into many ranges,
and shuffling every line between processes.

From `PARALLEL_MIN_BYTES` of local input, two forked processes share the
work (`in_two_halves`): one checks the first half of the input's bytes, the
other the second, while this one hashes the inputs and asks the ledger;
each then applies half of the buckets (`owner`). A check keeps each
accepted line as read, with its key, and each process hands the other the
lines of the other's buckets; a line is parsed again when its bucket is
applied, as in the pipeline after its shuffle (`apply_lines` says why).
"""

from __future__ import annotations

import ctypes
import itertools
import marshal
import mmap
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from profile_import.core.commands import CheckSettings, CommandChecker, commands_by_key
from profile_import.core.identifiers import bucket_of
from profile_import.core.numbering import RangeCount, first_lines
from profile_import.inputs.plan import InputFile, InputSplit, is_remote
from profile_import.inputs.scan import count_range, hash_content
from profile_import.transforms.apply_bucket import apply_bucket
from profile_import.transforms.check_lines import SplitTally, checked_lines
from profile_import.transforms.decisions import Decided, decide
from profile_import.transforms.finalize import add_counts, write_report
from profile_import.transforms.gc_pause import paused
from profile_import.transforms.reject_files import RejectFile, write_reject_file
from profile_import.transforms.scratch import folder as scratch_folder

from .job import ImportJob

RUNNER = "InProcess"
# From this many bytes of local input (about 3,300 lines), two processes
# share the work: below, forking and handing lines over cost what they save.
PARALLEL_MIN_BYTES = 1 << 20

T = TypeVar("T")


def whole_input(file: InputFile) -> InputSplit:
    """One input read whole, as one split starting at its first line."""
    name = "" if file.location == file.path else file.path
    return InputSplit(file.index, file.location, 0, None, 1, file.compression, name)


@dataclass
class Lines:
    """One bucket's accepted lines in input order, with their keys and kinds
    (`fold.kind_of`): as read, or views of the file the other process handed
    them over in. They are parsed again as the bucket is applied
    (`apply_lines`)."""

    keys: list[bytes] = field(default_factory=list)
    lines: list[bytes | memoryview] = field(default_factory=list)
    kinds: bytearray = field(default_factory=bytearray)


@dataclass
class Part:
    """What checking some splits found: the accepted lines by bucket, counts
    per input, the rejects of each split with any."""

    buckets: dict[int, Lines] = field(default_factory=dict)
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    rejects: list[tuple[tuple[int, int], bytes]] = field(default_factory=list)


def owner(bucket: int) -> int:
    """Which of the two processes applies a bucket (0: the first)."""
    return bucket & 1


def check_part(
    splits: Sequence[InputSplit],
    checker: CommandChecker,
    settings: CheckSettings,
    params: dict[str, Any] | None,
    *,
    buckets: int,
) -> Part:
    """Checks the splits in order; keeps each accepted line, not its parsed
    command (see `apply_lines`)."""
    part = Part()
    by_bucket = part.buckets
    for split in splits:
        tally = SplitTally()
        for accepted, content in checked_lines(split, checker, settings, tally, params):
            key = accepted.key
            bucket = bucket_of(key, buckets)
            in_bucket = by_bucket.get(bucket)
            if in_bucket is None:
                by_bucket[bucket] = in_bucket = Lines()
            in_bucket.keys.append(key)
            in_bucket.lines.append(content)
            in_bucket.kinds.append(accepted.kind)
        index = split.input_index
        part.counts[index] = add_counts([part.counts.get(index, {}), tally.counts()])
        if tally.reject_lines:
            part.rejects.append((split.sequence, b"".join(tally.reject_lines)))
    return part


def in_order(earlier: dict[int, Lines], later: dict[int, Lines]) -> dict[int, list[Lines]]:
    """Each bucket's lines from two parts of the input, the earlier part's first."""
    return {
        bucket: [part[bucket] for part in (earlier, later) if bucket in part]
        for bucket in sorted({*earlier, *later})
    }


def halves(
    inputs: Sequence[InputFile], applied: frozenset[int], params: dict[str, Any] | None
) -> list[list[InputSplit]]:
    """The applied inputs as one list of splits in input order, or as two that
    follow each other (the second starts where the first ends), cut near the
    middle of their bytes, for two processes. One list when the inputs are
    small, not all local files, or cannot be cut (a compressed input at the
    middle is read whole by the first)."""
    files = [f for f in inputs if f.index in applied]
    whole = [[whole_input(f) for f in files]]
    sizes = [f.size for f in files]
    if any(s is None or is_remote(f.location) for s, f in zip(sizes, files, strict=True)):
        return whole
    total = sum(s or 0 for s in sizes)
    if total < PARALLEL_MIN_BYTES or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        return whole
    first: list[InputSplit] = []
    before = 0
    for i, file in enumerate(files):
        size = file.size or 0
        if before + size < total // 2 or file.compression is not None:
            first.append(whole_input(file))
            before += size
            continue
        rest = [whole_input(f) for f in files[i + 1 :]]
        cut = total // 2 - before
        if cut <= 0:
            return [first, [whole_input(file), *rest]] if first else whole
        name = "" if file.location == file.path else file.path
        head = InputSplit(file.index, file.location, 0, cut, 1, None, name)
        # Not numbered yet (0): the process that reads it numbers it (`numbered`).
        tail = InputSplit(file.index, file.location, cut, size, 0, None, name)
        return [[*first, head], [tail, *rest]]
    return whole


def numbered(splits: Sequence[InputSplit], params: dict[str, Any] | None) -> list[InputSplit]:
    """The splits, the one cut at the middle of an input numbered: the number of
    its first line comes from counting the newlines before it."""
    done = []
    for split in splits:
        first_line = split.first_line
        if first_line == 0:
            head = replace(split, start=0, end=split.start, first_line=1)
            count = count_range(head, params)
            first_line = first_lines([count, RangeCount(split.start, 0, False)])[split.start]
        done.append(replace(split, first_line=first_line))
    return done


class Exchange:
    """How the two sides of a run and the launching process signal each other.

    Each side hands the other the lines of the other's buckets: the lines
    one after another in one file, their buckets, keys and ends in another
    (a pipe would block two writers of large ones); then one byte on a pipe
    says they are there. The receiving side maps the lines' file and parses
    each line straight from the mapping (a view of it), never copying it. The
    launching process says when both may go on (`go`: one byte to each). A
    process that ends closes its ends of the pipes, so the one waiting for
    it never waits for nothing.
    """

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._to = (os.pipe(), os.pipe())  # to side 0, to side 1
        self._go = os.pipe()
        self._held = {*self._to[0], *self._to[1], *self._go}  # the ends this process holds
        self._side = -1

    def _keep(self, *ends: int) -> None:
        for fd in self._held - set(ends):
            os.close(fd)
        self._held = set(ends)

    def take_side(self, side: int) -> None:
        """In a forked side: keeps only the ends it uses."""
        self._side = side
        self._keep(self._to[side][0], self._to[1 - side][1], self._go[0])

    def started(self) -> None:
        """In the launching process, once both sides run: keeps only its go end."""
        self._keep(self._go[1])

    def go(self) -> None:
        """In the launching process: lets both sides hand over and apply."""
        with suppress(BrokenPipeError):  # both ended: their results say why
            os.write(self._go[1], b"11")

    def close(self) -> None:
        """In the launching process, at the end: a side still waiting for its
        go learns the run stopped."""
        self._keep()

    def wait_to_go(self) -> None:
        """In a side: waits for the launching process's go."""
        if os.read(self._go[0], 1) != b"1":
            raise HandOverError("the run stopped before applying anything")

    def _path(self, side: int, what: str) -> str:
        return os.path.join(self._folder, f"to-{side}.{what}")

    def send(self, handed: dict[int, Lines]) -> None:
        """Hands the other side its buckets' lines."""
        header = []
        end = 0
        # Written line by line through one buffer: joining them first would
        # copy them all into new memory, then into the file.
        with open(self._path(1 - self._side, "lines"), "wb", buffering=1 << 20) as f:
            for bucket, lines in handed.items():
                f.writelines(lines.lines)
                ends = list(itertools.accumulate(map(len, lines.lines), initial=end))
                header.append((bucket, lines.keys, ends, bytes(lines.kinds)))
                end = ends[-1]
        with open(self._path(1 - self._side, "keys"), "wb") as f:
            f.write(marshal.dumps(header))
        try:
            os.write(self._to[1 - self._side][1], b"1")
        except BrokenPipeError as e:
            raise HandOverError("the other process of the run ended first") from e

    def receive(self) -> dict[int, Lines]:
        """The lines the other side handed over, by bucket: views of its file,
        mapped for as long as this process runs."""
        if os.read(self._to[self._side][0], 1) != b"1":
            raise HandOverError("the other process of the run ended before handing over its lines")
        with open(self._path(self._side, "keys"), "rb") as f:
            header = marshal.loads(f.read())
        with open(self._path(self._side, "lines"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        LEFT_TO_EXIT.append(mapped)
        view = memoryview(mapped)
        handed = {}
        for bucket, keys, ends, kinds in header:
            if len(ends) != len(keys) + 1 or len(kinds) != len(keys) or ends[-1] > size:
                raise HandOverError("the other process of the run handed over a damaged list")
            lines: list[bytes | memoryview] = [view[a:b] for a, b in itertools.pairwise(ends)]
            handed[bucket] = Lines(keys, lines, bytearray(kinds))
        return handed


class HandOverError(Exception):
    """The other process ended first: its own error says why."""


# What a forked process built and keeps to its end: it ends with `os._exit`,
# and the system takes its memory back at once, where freeing a million
# lines and keys object by object costs 0.4 s at 1M lines (5% of the run).
LEFT_TO_EXIT: list[Any] = []


class Forked(Generic[T]):
    """`work()` run in a forked process (the schemas, the settings, the store's
    handles are already in memory: nothing to start), its result handed back
    through a file. The work only reads and writes local files."""

    def __init__(self, work: Callable[[], T], folder: str) -> None:
        self._result = os.path.join(folder, f"result-{id(self)}.pickle")
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                _die_with(parent)
                result = work()
                with open(self._result, "wb") as f:
                    pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails
                with suppress(BaseException), open(self._result + ".error", "wb") as f:
                    pickle.dump((type(e) is HandOverError, str(e) or type(e).__name__), f)
            finally:
                os._exit(code)

    def result(self) -> T:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if status != 0:
            with suppress(OSError), open(self._result + ".error", "rb") as f:
                handed, message = pickle.load(f)
                raise (HandOverError if handed else InProcessError)(message)
            code = os.waitstatus_to_exitcode(status)
            how = f"signal {-code}" if code < 0 else f"status {code}"
            raise InProcessError(f"a process of the run ended with {how}, without a word")
        with open(self._result, "rb") as f:
            result: T = pickle.load(f)
        return result

    def stop(self) -> None:
        """Ends the child if it still runs (the parent failed or was interrupted)."""
        if self.pid:
            with suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0


def _die_with(parent: int) -> None:
    """Has Linux end this (forked) process when its parent ends, so a run
    killed with SIGKILL leaves no process staging buckets behind it."""
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before prctl took effect
        os._exit(1)


PerInput = dict[int, dict[str, int]]


class InProcessError(Exception):
    """A forked process of an in-process run failed: nothing is published."""

    def __init__(self, message: str, counts: PerInput | None = None) -> None:
        super().__init__(message)
        self.counts = counts  # per input, when every input was read and checked


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


def in_two(
    works: Sequence[Callable[[], T]], folder: str, exchange: Exchange, go: Callable[[], bool]
) -> list[T] | None:
    """Each of `works` in its own forked process, at the same time; their
    results once `go()`, called here meanwhile, let them go on (None: it
    did not; they are stopped). On a failure the others are stopped and the
    first real cause is raised (not a process's report that the other ended
    first)."""
    forks: list[Forked[T]] = []
    try:
        for work in works:
            forks.append(Forked(work, folder))
        exchange.started()
        if not go():
            return None
        exchange.go()
        results: list[T] = []
        handed: HandOverError | None = None
        for forked in forks:
            try:
                results.append(forked.result())
            except HandOverError as e:
                handed = e  # the other one's own error comes next
        if handed is not None:
            raise InProcessError(str(handed))
        return results
    finally:
        exchange.close()
        for forked in forks:
            forked.stop()


@dataclass
class Checked:
    """What one process checked and applied: counts per input, reject files,
    the results of the buckets it applied."""

    counts: dict[int, dict[str, int]]
    reject_files: list[RejectFile]
    results: list[dict[str, int]]
    processes: int = 1  # that did the work


def apply_lines(job: ImportJob, buckets: dict[int, list[Lines]]) -> list[dict[str, int]]:
    """Applies each bucket's lines (its parts in input order), bucket after bucket.

    A line is parsed again as the fold reads it, so only one bucket's
    commands are ever in memory, as in the pipeline's apply step. Holding
    every parsed command instead took twice the memory at 1M lines, and
    the first touch of that memory cost more than parsing twice (1.7 GiB and
    9.6 s against 0.8 GiB and 7.8 s; bench/README.md). A DELETE, or an
    UPSERT a later command makes moot, is not parsed again at all
    (`load_commands`): 40% of the bench's lines.
    """
    sink = job.finalizer.staging.sink if job.finalizer.staging is not None else None
    source = job.source
    source.open()
    if sink is not None:
        sink.open()
    now = job.finalizer.ctx.started_at
    results = []
    for bucket in sorted(buckets):
        # orjson reads a view as bytes.
        commands, applied = commands_by_key(
            itertools.chain.from_iterable(
                zip(part.keys, part.kinds, part.lines, strict=True) for part in buckets[bucket]
            )
        )
        results.append(apply_bucket(source, sink, bucket, commands, applied, now))
    return results


def write_rejects(job: ImportJob, part: Part) -> list[RejectFile]:
    return [write_reject_file(job.rejects_dir, seq, payload) for seq, payload in part.rejects]


def in_one(job: ImportJob, checker: CommandChecker, splits: Sequence[InputSplit]) -> Checked:
    params = job.transport_params or None
    part = check_part(splits, checker, job.check, params, buckets=job.buckets)
    with counted(part.counts):
        reject_files = write_rejects(job, part)
        return Checked(part.counts, reject_files, apply_lines(job, in_order(part.buckets, {})))


def in_two_halves(
    job: ImportJob,
    checker: CommandChecker,
    parts: Sequence[Sequence[InputSplit]],
    go: Callable[[], bool],
) -> Checked | None:
    """The two halves in two forked processes at once, each checking its half
    and applying the buckets it owns, with the lines the other hands over;
    neither hands over before `go()`, called here meanwhile, says to (None:
    it did not, nothing was applied).

    Input order holds for every identifier: the first half's lines come
    before the second half's in every bucket, whichever side applies it.
    """

    def side(number: int) -> Checked:
        exchange.take_side(number)
        splits = numbered(parts[number], None)
        part = check_part(splits, checker, job.check, None, buckets=job.buckets)
        # For the report of a run that fails from here (`counts_checked`).
        with open(os.path.join(folder, f"counts-{number}.pickle"), "wb") as f:
            pickle.dump(part.counts, f)
        mine = {b: lines for b, lines in part.buckets.items() if owner(b) == number}
        exchange.wait_to_go()
        exchange.send({b: lines for b, lines in part.buckets.items() if owner(b) != number})
        part.buckets.clear()  # what was handed over: its memory serves the folds
        reject_files = write_rejects(job, part)
        handed = exchange.receive()
        # Left to the process's exit, like everything it built (see Forked).
        LEFT_TO_EXIT.extend((mine, handed))
        buckets = in_order(mine, handed) if number == 0 else in_order(handed, mine)
        return Checked(part.counts, reject_files, apply_lines(job, buckets))

    # The hand-over files: removed whatever ends the run, or by the next run.
    with scratch_folder("profile-import-halves-") as folder:
        exchange = Exchange(folder)
        try:
            done = in_two([lambda: side(0), lambda: side(1)], folder, exchange, go)
        except Exception:
            counts = counts_checked(folder, len(parts))
            if counts is None:
                raise
            with counted(counts):
                raise
    if done is None:
        return None
    first, second = done
    counts = {
        index: add_counts([first.counts.get(index, {}), second.counts.get(index, {})])
        for index in {*first.counts, *second.counts}
    }
    files, results = first.reject_files + second.reject_files, first.results + second.results
    return Checked(counts, files, results, processes=2)


def counts_checked(folder: str, sides: int) -> PerInput | None:
    """What every side read and checked, if every side finished checking."""
    counts: list[PerInput] = []
    for number in range(sides):
        try:
            with open(os.path.join(folder, f"counts-{number}.pickle"), "rb") as f:
                counts.append(pickle.load(f))
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
    indexes = {index for side in counts for index in side}
    return {i: add_counts(side.get(i, {}) for side in counts) for i in indexes}


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
            parts = halves(ctx.inputs, listed, params)
            if len(parts) == 2:
                # The two halves are checked while this process hashes the inputs
                # and asks the ledger; they apply only if it applies every input.
                done = in_two_halves(job, checker, parts, applies_all)
            if done is None:
                decided = decided or decide_inputs()
                parts = halves(ctx.inputs, decided.applied, params)
                if len(parts) == 2:
                    done = in_two_halves(job, checker, parts, lambda: True)
                else:
                    done = in_one(job, checker, parts[0])
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
