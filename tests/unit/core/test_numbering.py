from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_import.core.numbering import RangeCount, first_lines, first_lines_after

pytestmark = pytest.mark.spec(section=1)


def lines_starting_in(data: bytes, start: int, end: int) -> int:
    """Lines start at byte 0 and right after each newline, before the end."""
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 < len(data)]
    return sum(start <= s < end for s in starts) if data else 0


@given(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"\n")),
    st.lists(st.integers(1, 59), max_size=8),
)
def test_numbering_from_lines_checked_equals_numbering_from_newlines(
    data: bytes, cuts: list[int]
) -> None:
    """The local engine numbers its ranges after checking them, from the lines
    each holds; Beam's NumberSplits before, from their newlines: the same
    first line for every range, wherever the cuts fall."""
    bounds = sorted({0, *(c for c in cuts if c < len(data)), len(data)})
    ranges = list(itertools.pairwise(bounds)) or [(0, 0)]
    counts = [RangeCount(a, data[a:b].count(b"\n"), data[b - 1 : b] == b"\n") for a, b in ranges]
    from_newlines = first_lines(counts)
    from_lines = first_lines_after((0, lines_starting_in(data, a, b)) for a, b in ranges)
    for (start, end), number in zip(ranges, from_lines, strict=True):
        if lines_starting_in(data, start, end):  # a range without a line has no first line
            assert from_newlines[start] == number


def test_each_input_is_numbered_from_one() -> None:
    assert first_lines_after([(0, 3), (0, 2), (1, 5), (1, 0), (1, 4)]) == [1, 4, 1, 6, 6]
