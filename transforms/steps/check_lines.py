"""Checking one split's lines: accepted lines by bucket out, rejects and counts kept.

No Beam here: `transforms.parse_commands` runs `checked_by_bucket` for every split of
the pipeline, and the local engine (`pipelines.in_process`) for every split
of its workers, so both check, reject, count and bucket a line the same way
(SPEC §1, §3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from profile_import.core import rejects
from profile_import.core.codes import LineRejected, RejectCode
from profile_import.core.commands import Accepted, CheckSettings, CommandChecker
from profile_import.core.fold import UPSERT
from profile_import.core.identifiers import bucket_of
from profile_import.inputs.lines import Line, ReadPosition, read_lines
from profile_import.inputs.plan import InputSplit

from . import metrics


class SplitTally:
    """What checking a split found besides its accepted commands."""

    def __init__(self) -> None:
        self.lines = 0
        self.blank = 0
        self.upserts = 0
        self.reject_lines: list[bytes] = []  # encoded as the rejects file's NDJSON
        self.rejected_by_code: dict[RejectCode, int] = {}

    @property
    def rejected(self) -> int:
        return len(self.reject_lines)

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


# How often a check reports its progress: a count of lines, so that the
# loop over lines stays free of any test (see `checked_lines`).
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
    """The split's accepted lines by bucket (added to `into`, after what it
    holds). Blank and rejected lines are counted in `tally`. `lines`: the
    split's lines as given (a source's, `transforms.import_profiles`), not read."""
    by_bucket = {} if into is None else into
    for accepted, content in checked_lines(
        split, checker, settings, tally, transport_params, progress, lines
    ):
        key = accepted.key
        bucket = bucket_of(key, buckets)
        in_bucket = by_bucket.get(bucket)
        if in_bucket is None:
            by_bucket[bucket] = in_bucket = BucketLines()
        in_bucket.keys.append(key)
        in_bucket.kinds.append(accepted.kind)
        in_bucket.lines.append(content)
    return by_bucket


def checked_lines(
    split: InputSplit,
    checker: CommandChecker,
    settings: CheckSettings,
    tally: SplitTally,
    transport_params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    given: Iterable[Line] | None = None,
) -> Iterator[tuple[Accepted, bytes]]:
    """Every accepted command of the split with its line, in input order.

    Blank and rejected lines are counted in `tally` (rejects encoded there).
    `progress` hears how far the read has gone every `PROGRESS_LINES` lines
    and at the end.
    """
    check = checker.check
    redact = settings.redact
    reject_lines = tally.reject_lines
    by_code = tally.rejected_by_code
    lines = blank = upserts = 0
    position = ReadPosition()
    numbered = (
        read_lines(split, settings.max_line_bytes, transport_params, position)
        if given is None
        else iter(given)
    )
    # Read in runs of lines between two reports (one run without `progress`):
    # islice counts them, not a test in the loop.
    run = PROGRESS_LINES if progress is not None else None
    try:
        while True:
            before = lines
            for number, content, size in itertools.islice(numbered, run):
                lines += 1
                try:
                    accepted = check(content, size)
                except LineRejected as rejected:
                    by_code[rejected.code] = by_code.get(rejected.code, 0) + 1
                    reject_lines.append(
                        rejects.encode(
                            split.display_name,
                            number,
                            rejected,
                            content,
                            truncated=size > len(content),
                            redact=redact,
                        )
                    )
                    continue
                if accepted is None:
                    blank += 1
                    continue
                if accepted.operation == UPSERT:
                    upserts += 1
                yield accepted, content
            if progress is not None:
                progress(lines, position.bytes_read())
            if run is None or lines - before < run:
                break
    finally:
        # Counted in locals: an attribute update per line costs more than the check.
        tally.lines += lines
        tally.blank += blank
        tally.upserts += upserts
