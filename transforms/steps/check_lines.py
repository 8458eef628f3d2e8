"""Checking one split's lines: accepted lines by bucket out, rejects and counts kept.

No Beam here: `transforms.parse_commands` runs `checked_by_bucket` for every split of
the pipeline, and the local engine (`pipelines.in_process`) for every split
of its workers, so both check, reject, count and bucket a line the same way
(SPEC §1, §3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from profile_import.core import rejects
from profile_import.core.codes import LineRejected, RejectCode
from profile_import.core.commands import CheckSettings, CommandChecker
from profile_import.core.fold import UPSERT
from profile_import.core.identifiers import bucket_of
from profile_import.inputs.lines import Line, LineRun, ReadPosition, read_runs
from profile_import.inputs.plan import InputSplit

from . import metrics


class SplitTally:
    """What checking a split found besides its accepted commands."""

    def __init__(self) -> None:
        self.lines = 0
        self.blank = 0
        self.upserts = 0
        # Each rejected line as (number, code, message, content kept, cut):
        # encoded once its number is sure (`reject_lines`).
        self.rejects: list[tuple[int, RejectCode, str, bytes, bool]] = []
        self.rejected_by_code: dict[RejectCode, int] = {}

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def reject_lines(self, file: str, *, redact: bool, shift: int = 0) -> list[bytes]:
        """The rejects as lines of the rejects file; `shift` is added to each
        line number (a split checked as if it started the input, by an
        engine that numbers its lines afterwards)."""
        return [
            rejects.encode(
                file,
                number + shift,
                LineRejected(code, message),
                content,
                truncated=truncated,
                redact=redact,
            )
            for number, code, message, content, truncated in self.rejects
        ]

    @property
    def accepted(self) -> int:
        return self.lines - self.blank - self.rejected

    def counts(self) -> dict[str, int]:
        """What the report counts (`core.report.LINE_COUNTS`, `rejected.<CODE>`)."""
        counts = {
            "lines": self.lines,
            "blank": self.blank,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "upserts": self.upserts,
            "deletes": self.accepted - self.upserts,
        }
        for code, count in self.rejected_by_code.items():
            counts[metrics.REJECTED_PREFIX + code] = count
        return counts


# How often, at least, a check reports its progress: after the run of lines
# that reaches this many since the last report.
PROGRESS_LINES = 1 << 15
# (lines read, bytes of the input as stored gone through), for the split so far.
Progress = Callable[[int, int], None]


@dataclass
class BucketLines:
    """One bucket's accepted lines from a contiguous range of the input, in
    input order, each with its identifier's key and its command's kind
    (`fold.kind_of`). The lines stay raw: they are parsed again when the
    bucket is applied (`apply_bucket.apply_lines`)."""

    keys: list[bytes] = field(default_factory=list)
    kinds: bytearray = field(default_factory=bytearray)
    lines: list[bytes | memoryview] = field(default_factory=list)


def checked_by_bucket(
    split: InputSplit,
    checker: CommandChecker,
    settings: CheckSettings,
    tally: SplitTally,
    buckets: int,
    transport_params: dict[str, Any] | None = None,
    *,
    into: dict[int, BucketLines] | None = None,
    progress: Progress | None = None,
    lines: Iterable[Line] | None = None,
) -> dict[int, BucketLines]:
    """The split's accepted lines by bucket, in input order (added to `into`,
    after what it holds). Blank and rejected lines are counted in `tally`
    (rejects kept there). `lines`: the split's lines as given (a
    source's, `transforms.import_profiles`), not read. `progress` hears how
    far the read has gone every `PROGRESS_LINES` lines or so, and at the end.
    """
    by_bucket = {} if into is None else into
    check = checker.check
    reject_list = tally.rejects
    by_code = tally.rejected_by_code
    count = blank = upserts = 0
    position = ReadPosition()
    runs = (
        read_runs(split, settings.max_line_bytes, transport_params, position)
        if lines is None
        else [LineRun.of(lines)]
    )
    reported = 0
    try:
        for run in runs:
            cut = run.cut
            for number, content in zip(run.numbers, run.contents, strict=True):
                try:
                    accepted = check(content, cut.get(number))
                except LineRejected as rejected:
                    by_code[rejected.code] = by_code.get(rejected.code, 0) + 1
                    reject_list.append(
                        (number, rejected.code, rejected.message, content, number in cut)
                    )
                    continue
                if accepted is None:
                    blank += 1
                    continue
                if accepted.operation == UPSERT:
                    upserts += 1
                key = accepted.key
                bucket = bucket_of(key, buckets)
                in_bucket = by_bucket.get(bucket)
                if in_bucket is None:
                    by_bucket[bucket] = in_bucket = BucketLines()
                in_bucket.keys.append(key)
                in_bucket.kinds.append(accepted.kind)
                in_bucket.lines.append(content)
            count += len(run.contents)
            if progress is not None and count - reported >= PROGRESS_LINES:
                progress(count, position.bytes_read())
                reported = count
        if progress is not None:
            progress(count, position.bytes_read())
    finally:
        # Counted in locals: an attribute update per line costs more than the check.
        tally.lines += count
        tally.blank += blank
        tally.upserts += upserts
    return by_bucket
