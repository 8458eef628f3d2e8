"""What crosses the shuffle: per-bucket batches of raw command lines.

Sending one element per line through a GroupByKey costs more than all the
work done on the line (measured: a per-element pipeline ran ~5x slower than a
plain loop). So each input split sends one element per bucket it touches: the
accepted lines of that split for that bucket, joined by newlines into one
bytes value, with the split's sequence (input index, first line number).

Splits are contiguous line ranges of their input, so sorting a bucket's
batches by sequence puts every line of the bucket back in input order; no
per-line number needs to travel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple


class CommandBatch(NamedTuple):
    input_index: int
    first_line: int
    payload: bytes  # accepted lines, in input order, joined by b"\n"

    @property
    def sequence(self) -> tuple[int, int]:
        return (self.input_index, self.first_line)

    def lines(self) -> list[bytes]:
        return self.payload.split(b"\n")


def in_input_order(batches: Iterable[CommandBatch]) -> Iterator[bytes]:
    """Every line of a bucket's batches, in input order."""
    for batch in sorted(batches, key=lambda b: (b[0], b[1])):
        yield from CommandBatch(*batch).lines()
