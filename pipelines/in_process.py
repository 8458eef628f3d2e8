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

import os
import pickle
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from profile_import.core.commands import CheckSettings, CommandChecker, load_accepted
from profile_import.core.fold import Command
from profile_import.core.identifiers import bucket_of
from profile_import.core.numbering import RangeCount, first_lines
from profile_import.inputs.plan import InputFile, InputSplit, is_remote
from profile_import.inputs.scan import count_range, hash_content
from profile_import.transforms.apply_bucket import apply_bucket
from profile_import.transforms.check_lines import SplitTally, checked_lines
from profile_import.transforms.decisions import decide
from profile_import.transforms.finalize import add_counts, write_report
from profile_import.transforms.gc_pause import paused
from profile_import.transforms.reject_files import write_reject_file

from .job import ImportJob

RUNNER = "InProcess"
# From this many bytes of input, a second process checks the second half:
# below, forking and parsing its lines again cost more than they save.
PARALLEL_MIN_BYTES = 8 << 20

T = TypeVar("T")


def whole_input(file: InputFile) -> InputSplit:
    """One input read whole, as one split starting at its first line."""
    name = "" if file.location == file.path else file.path
    return InputSplit(file.index, file.location, 0, None, 1, file.compression, name)


@dataclass
class Part:
    """What checking some splits found: each accepted line's key and raw line
    (`lines`), or its parsed command straight in `by_key`; counts per input;
    the rejects of each split with any."""

    by_key: dict[bytes, list[Command]] = field(default_factory=dict)
    lines: list[tuple[bytes, bytes]] = field(default_factory=list)
    counts: dict[int, dict[str, int]] = field(default_factory=dict)
    rejects: list[tuple[tuple[int, int], bytes]] = field(default_factory=list)


def check_part(
    splits: Sequence[InputSplit],
    checker: CommandChecker,
    settings: CheckSettings,
    params: dict[str, Any] | None,
    *,
    keep_raw: bool,
) -> Part:
    """Checks the splits in order. `keep_raw`: keep each accepted line as read
    (for another process, which parses it again), else its parsed command."""
    part = Part()
    by_key, raw = part.by_key, part.lines
    for split in splits:
        tally = SplitTally()
        for accepted, content in checked_lines(split, checker, settings, tally, params):
            if keep_raw:
                raw.append((accepted.key, content))
                continue
            sequence = by_key.get(accepted.key)
            if sequence is None:
                by_key[accepted.key] = sequence = []
            sequence.append(Command.from_object(accepted.obj))
        index = split.input_index
        part.counts[index] = add_counts([part.counts.get(index, {}), tally.counts()])
        if tally.reject_lines:
            part.rejects.append((split.sequence, b"".join(tally.reject_lines)))
    return part


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
        numbers = first_lines([count_range(head, params), RangeCount(cut, 0, False)])
        tail = InputSplit(file.index, file.location, cut, size, numbers[cut], None, name)
        return [[*first, head], [tail, *rest]]
    return whole


class Forked(Generic[T]):
    """`work()` run in a forked process (Beam, the schemas, the parsed commands
    are already in memory: nothing to start or send), its result handed back
    through a file. The work only reads and writes local files."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._folder = tempfile.mkdtemp(prefix="profile-import-part-")
        self._result = os.path.join(self._folder, "result.pickle")
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                result = work()
                with open(self._result, "wb") as f:
                    pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails
                with suppress(BaseException), open(self._result + ".error", "w") as f:
                    f.write(str(e) or type(e).__name__)
            finally:
                os._exit(code)

    def result(self) -> T:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            if status != 0:
                with suppress(OSError), open(self._result + ".error") as f:
                    raise InProcessError(f.read())
                raise InProcessError(f"the second process ended with status {status}")
            with open(self._result, "rb") as f:
                result: T = pickle.load(f)
            return result
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def stop(self) -> None:
        """Ends the child if it still runs (the parent failed or was interrupted)."""
        if self.pid:
            with suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0
            shutil.rmtree(self._folder, ignore_errors=True)


def in_two(work: Callable[[], T], other: Callable[[], T] | None) -> tuple[T, T | None]:
    """`work()` here and `other()` (if any) in a forked process, at the same time."""
    forked = Forked(other) if other is not None else None
    try:
        mine = work()
        return mine, forked.result() if forked is not None else None
    finally:
        if forked is not None:
            forked.stop()


class InProcessError(Exception):
    """The second process of an in-process run failed: nothing is published."""


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
    parts = halves(ctx.inputs, decided.applied, params)
    with paused():
        # Two halves: the second checked by a forked process at the same time;
        # its accepted lines come back raw and are parsed again here (~2 µs a
        # line), after the first half's, so every identifier keeps input order.
        first, forked_part = in_two(
            lambda: check_part(parts[0], checker, job.check, params, keep_raw=False),
            (lambda: check_part(parts[1], checker, job.check, None, keep_raw=True))
            if len(parts) == 2
            else None,
        )
        second = forked_part or Part()
        by_key = first.by_key
        for key, content in second.lines:
            sequence = by_key.get(key)
            if sequence is None:
                by_key[key] = sequence = []
            sequence.append(load_accepted(content))
        input_counts = {
            index: add_counts([first.counts.get(index, {}), second.counts.get(index, {})])
            for index in {*first.counts, *second.counts}
        }
        reject_files = [
            write_reject_file(job.rejects_dir, sequence, payload)
            for sequence, payload in [*first.rejects, *second.rejects]
        ]
        commands: dict[int, dict[bytes, list[Command]]] = {}
        for key, sequence in by_key.items():
            bucket = bucket_of(key, job.buckets)
            in_bucket = commands.get(bucket)
            if in_bucket is None:
                commands[bucket] = in_bucket = {}
            in_bucket[key] = sequence
        del by_key, first, second
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
