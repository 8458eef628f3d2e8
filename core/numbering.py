"""Line numbers of input ranges cut anywhere, from their newline counts.

A range [start, end) of an input holds the lines that start in it. Lines start
at byte 0 and right after each newline, so the first line that starts at or
after `start` (start > 0) is line

    newlines before `start` + 1   if the byte before `start` is a newline,
    newlines before `start` + 2   otherwise (the line under way belongs to
                                  the range before).

Each range's newline count and whether its last byte is a newline are counted
in parallel; prefix sums then number every range (`first_lines`). An engine
that checks the ranges before it numbers them counts the lines that start in
each instead (`first_lines_after`): the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class RangeCount(NamedTuple):
    start: int
    newlines: int
    ends_with_newline: bool


def first_lines(counts: Iterable[RangeCount]) -> dict[int, int]:
    """`start -> number of the first line that starts in the range`, for the
    ranges of one input, which together cover it from byte 0 without gaps."""
    numbers: dict[int, int] = {}
    newlines_before = 0
    previous_ends_with_newline = True
    for count in sorted(counts):
        if count.start == 0:
            numbers[0] = 1
        else:
            numbers[count.start] = newlines_before + (1 if previous_ends_with_newline else 2)
        newlines_before += count.newlines
        previous_ends_with_newline = count.ends_with_newline
    return numbers


def first_lines_after(ranges: Iterable[tuple[int, int]]) -> list[int]:
    """The number of each range's first line, from (input index, lines that
    start in the range) for ranges in input order: one after the lines of
    the ranges before it in its input."""
    numbers = []
    before: dict[int, int] = {}
    for input_index, lines in ranges:
        seen = before.get(input_index, 0)
        numbers.append(seen + 1)
        before[input_index] = seen + lines
    return numbers


def line_count(newlines: int, size: int, ends_with_newline: bool) -> int:
    """Lines of a content: a last line without a newline counts too."""
    return newlines + (1 if size and not ends_with_newline else 0)
