"""Checking one split's lines: accepted commands out, rejects and counts kept.

No Beam here: `transforms.parse` runs it for every split of the pipeline,
and the in-process run for every input, so both check, reject and count a
line the same way (SPEC §1, §3).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from profile_import.core import rejects
from profile_import.core.codes import LineRejected, RejectCode
from profile_import.core.commands import Accepted, CheckSettings, CommandChecker
from profile_import.core.fold import UPSERT
from profile_import.inputs.lines import read_lines
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


def checked_lines(
    split: InputSplit,
    checker: CommandChecker,
    settings: CheckSettings,
    tally: SplitTally,
    transport_params: dict[str, Any] | None = None,
) -> Iterator[tuple[Accepted, bytes]]:
    """Every accepted command of the split with its line, in input order.

    Blank and rejected lines are counted in `tally` (rejects encoded there).
    """
    check = checker.check
    redact = settings.redact
    reject_lines = tally.reject_lines
    by_code = tally.rejected_by_code
    lines = blank = upserts = 0
    try:
        for number, content, size in read_lines(split, settings.max_line_bytes, transport_params):
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
    finally:
        # Counted in locals: an attribute update per line costs more than the check.
        tally.lines += lines
        tally.blank += blank
        tally.upserts += upserts
