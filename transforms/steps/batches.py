"""What crosses the shuffle: per-bucket batches of raw command lines.

Both engines frame a bucket's lines this way: the Beam pipeline for its
shuffle, and the local engine's workers for the lines one hands another
(`pipelines.forked_workers`); both put a bucket's parts back in input order
with `in_input_order`.

Sending one element per line through a GroupByKey costs more than all the
work done on the line (measured: a per-element pipeline ran ~5x slower than a
plain loop). So each input split sends one element per bucket it touches: the
accepted lines of that split for that bucket, as one frame: a header (each
line's identifier key, so that the apply step need not resolve it again; its
command's kind, one byte, `core.fold.kind_of`, so that it need not parse a
line whose content a later command makes moot; where each line ends), then
the lines one after another, as read. No line is framed or split on its own:
the apply step reads each line as a view of the frame. The header is
`marshal`ed (lists of bytes and ints: the fastest codec for them); a frame
is only read by the same job's workers.

The element is a plain tuple, which Beam's coders encode natively (a
NamedTuple would be pickled): `(input index, first line of the split,
frame, spill file, offset, size)`. Splits are contiguous line ranges of their input, so
sorting a bucket's batches by (input index, first line) puts every line of the
bucket back in input order; no per-line number needs to travel.

Spilling: with a spill folder, a split's frames are written one after the
other to one file there (`Spill`), and each element carries where its frame
is in it (frame empty). One file per split, not per batch: creating a file
costs the kernel more than writing a frame. The GroupByKey then moves a
few thousand tiny elements instead of the whole input. On the local
FnApiRunner this is what lets two worker processes pay off: the runner
otherwise decodes, regroups and re-encodes every frame in its own process,
through gRPC both ways (measured on 1M lines with 2 workers: 15.6 s and
1.9 GB in the runner process inline, 7.5 s and ~180 MB per process spilled).
Runners with a real shuffle service (Dataflow) carry the frame inline.
"""

from __future__ import annotations

import contextlib
import itertools
import marshal
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

# (input index, first line of the split, frame, spill file or "", its offset and size there)
CommandBatch = tuple[int, int, bytes, str, int, int]
# Anything that starts with the (input index, first line) of the contiguous
# range of lines it comes from: a CommandBatch, the local engine's parts.
Part = TypeVar("Part", bound=tuple[Any, ...])

# A frame starts with its header's size, in this many bytes (little-endian).
_HEADER_SIZE_BYTES = 8


class DamagedBatch(Exception):
    """A batch whose frame does not hold what its header says."""


class Spill:
    """A file of frames, each written after the one before: a split's (the
    Beam pipeline's shuffle), or what one local worker hands another
    (`pipelines.forked_workers`). A retried bundle rewrites the same file with
    the same bytes; the apply stage only starts once every split has been read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - see close()
        self._end = 0

    def close(self) -> None:
        self._file.close()

    def write(self, frame: bytes) -> int:
        """Writes `frame`; returns its offset."""
        offset = self._end
        self._file.write(frame)
        self._end += len(frame)
        return offset


@contextlib.contextmanager
def spilled(spill_dir: str | None, input_index: int, first_line: int) -> Iterator[Spill | None]:
    """The spill file of a split (None without a spill folder), closed after."""
    if spill_dir is None:
        yield None
        return
    spill = Spill(os.path.join(spill_dir, f"{input_index:06d}-{first_line:012d}.batches"))
    try:
        yield spill
    finally:
        spill.close()


def encode(
    input_index: int,
    first_line: int,
    keys: Sequence[bytes],
    kinds: bytes | bytearray,
    lines: Sequence[bytes | memoryview],
    spill: Spill | None = None,
) -> CommandBatch:
    """A batch of one split's accepted lines of one bucket, in input order,
    each with its identifier's key and its command's kind: inline, or
    written to the split's `spill`."""
    ends = list(itertools.accumulate(map(len, lines)))
    header = marshal.dumps((list(keys), bytes(kinds), ends))
    # One join: cheaper than writing the lines one by one through a buffer.
    frame = b"".join([len(header).to_bytes(_HEADER_SIZE_BYTES, "little"), header, *lines])
    if spill is None:
        return (input_index, first_line, frame, "", 0, len(frame))
    return (input_index, first_line, b"", spill.path, spill.write(frame), len(frame))


def _frame(batch: CommandBatch) -> bytes:
    _, _, frame, spilled, offset, size = batch
    if not spilled:
        return frame
    fd = os.open(spilled, os.O_RDONLY)
    try:
        frame = os.pread(fd, size, offset)
    finally:
        os.close(fd)
    if len(frame) != size:
        raise DamagedBatch(f"a batch of command lines is damaged: {spilled} ends early")
    return frame


def decoded(
    frame: bytes | memoryview,
) -> tuple[list[bytes], bytes, list[bytes | memoryview]]:
    """The keys, kinds and lines of one batch's frame, in order; each line a
    view of the frame."""
    view = memoryview(frame)
    size = int.from_bytes(view[:_HEADER_SIZE_BYTES], "little")
    start = _HEADER_SIZE_BYTES + size
    try:
        keys, kinds, ends = marshal.loads(view[_HEADER_SIZE_BYTES:start])
    except (EOFError, ValueError, TypeError) as e:
        raise DamagedBatch(f"a batch of command lines is damaged: {e}") from e
    lines = view[start:]
    if not len(keys) == len(kinds) == len(ends) or (ends[-1] if ends else 0) != len(lines):
        raise DamagedBatch("a batch of command lines is damaged: its lines do not match its header")
    return keys, kinds, list(map(lines.__getitem__, map(slice, [0, *ends], ends)))


def decode(frame: bytes | memoryview) -> Iterator[tuple[bytes, int, bytes | memoryview]]:
    """Every (key, kind, line) of one batch's frame, in order (`decoded`)."""
    return zip(*decoded(frame), strict=False)


def in_file(batch: CommandBatch, mapped: memoryview) -> memoryview:
    """The frame of a batch written to a `Spill`, in a view of that file."""
    return mapped[batch[4] : batch[4] + batch[5]]


def in_input_order(parts: Iterable[Part]) -> list[Part]:
    """A bucket's parts in input order: the input-order rule of both engines.

    Each part holds the bucket's lines of one contiguous range of the input,
    in order, and starts with that range's (input index, first line). The
    ranges do not overlap, so sorting the parts by it puts every line of the
    bucket back in input order; no per-line number needs to travel.
    """
    return sorted(parts, key=lambda part: (part[0], part[1]))


def lines_in_input_order(
    batches: Iterable[CommandBatch],
) -> Iterator[tuple[bytes, int, bytes | memoryview]]:
    """Every (key, kind, line) of a bucket's batches, in input order."""
    # Chained in C: no generator frame resumed per line.
    return itertools.chain.from_iterable(map(decode, map(_frame, in_input_order(batches))))
