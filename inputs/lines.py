"""Reading the lines of one input split.

Lines end with `\\n` or `\\r\\n`; the terminator is not part of a line. A UTF-8
byte-order mark at the start of a file is dropped. A line longer than the run's
limit is never held whole: its first `max_line_bytes` are kept, the rest is
skipped, and its full size is reported so the check can reject it. A line of
white space only comes out empty, whatever its length: it is blank, never
rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from profile_import.stores.failpoints import READING, failpoint

from .plan import InputSplit, decompressed, open_raw

_UTF8_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20


class InputReadError(Exception):
    """An input that failed while a split was read (corrupt, vanished, ...)."""


class ReadPosition:
    """How many bytes of its input, as stored, a split's read has gone
    through: the compressed bytes of a compressed input, which is what a
    progress line can count against the size listed."""

    def __init__(self) -> None:
        self._tell: Callable[[], int] = lambda: 0
        self._start = 0

    def follow(self, stream: Any, start: int) -> None:
        self._tell, self._start = stream.tell, start

    def bytes_read(self) -> int:
        try:
            return max(self._tell() - self._start, 0)
        except (OSError, ValueError):  # a stream that cannot tell
            return 0

    def stop(self) -> None:
        """Keeps the position reached, before the stream is closed."""
        reached = self.bytes_read() + self._start
        self._tell = lambda: reached


class Line(NamedTuple):
    number: int
    content: bytes
    size: int  # the full length without terminator; > len(content) when cut


class LineRun(NamedTuple):
    """Consecutive lines of a split, in input order.

    `contents` holds each line without its terminator (a first line without
    its byte-order mark). A line over the limit holds its first
    `max_line_bytes` bytes, or nothing when it is only white space, and
    `cut` gives its full size by line number. A line of white space only
    within the limit is left as read: the check finds it blank (SPEC §1).
    """

    numbers: Sequence[int]
    contents: list[bytes]
    cut: Mapping[int, int]

    @classmethod
    def of(cls, lines: Iterable[Line]) -> LineRun:
        """Lines given one at a time (a source's, `transforms.import_profiles`)
        as one run."""
        given = list(lines)
        return cls(
            [line.number for line in given],
            [line.content for line in given],
            {line.number: line.size for line in given if line.size > len(line.content)},
        )


# How much a read takes at a time: the lines of a block are cut out by one
# `split`, not read one call at a time.
BLOCK_BYTES = 1 << 20
_NO_CUTS: Mapping[int, int] = MappingProxyType({})


def read_runs(
    split: InputSplit,
    max_line_bytes: int,
    transport_params: dict[str, Any] | None = None,
    position: ReadPosition | None = None,
) -> Iterator[LineRun]:
    """Every line that starts in the split, in runs, numbered from the split's
    first line; `position` follows the bytes read."""
    try:
        yield from _read(split, max_line_bytes, transport_params, position)
    except InputReadError:
        raise
    except Exception as e:
        raise InputReadError(f"input {split.display_name}: read failed: {e}") from e


def read_lines(
    split: InputSplit,
    max_line_bytes: int,
    transport_params: dict[str, Any] | None = None,
    position: ReadPosition | None = None,
) -> Iterator[Line]:
    """Every line that starts in the split, one at a time, with its size; a
    line of white space only comes out empty, whatever its length."""
    for run in read_runs(split, max_line_bytes, transport_params, position):
        for number, content in zip(run.numbers, run.contents, strict=True):
            size = run.cut.get(number)
            if size is not None:
                yield Line(number, content, size)
            elif not content.strip():
                yield Line(number, b"", 0)
            else:
                yield Line(number, content, len(content))


def _read(
    split: InputSplit,
    max_line_bytes: int,
    transport_params: dict[str, Any] | None,
    meter: ReadPosition | None,
) -> Iterator[LineRun]:
    failpoint(READING)
    raw = open_raw(split.path, transport_params)
    with raw, raw if split.compression is None else decompressed(raw, split.compression) as stream:
        if meter is not None:
            meter.follow(raw, split.start)
        position = split.start
        if split.start:
            # The range holds the lines that start in it: the line under way
            # at `start` belongs to the range before, unless a newline ends
            # right before `start`.
            stream.seek(split.start - 1)
            position -= 1
            while rest := stream.readline(_SKIP_CHUNK):
                position += len(rest)
                if rest.endswith(b"\n"):
                    break
        cutter = _Cutter(stream, split.first_line, max_line_bytes, file_start=not split.start)
        remaining = None if split.end is None else split.end - position
        while remaining is None or remaining > 0:
            block = stream.read(BLOCK_BYTES if remaining is None else min(BLOCK_BYTES, remaining))
            if not block:
                break
            run = cutter.run_of(block)
            if remaining is not None:
                remaining -= len(block) + cutter.read_past
            if run is not None:
                yield run
        # The line under way at the range's end started in it: read to its end.
        last = cutter.finish()
        if last is not None:
            yield last
        if meter is not None:
            meter.stop()


class _Cutter:
    """Cuts a stream's blocks into runs of lines. Holds the line under way
    from one block to the next, never more of it than the limit: the rest of
    a longer line is read on and skipped."""

    def __init__(
        self, stream: Any, first_number: int, max_line_bytes: int, *, file_start: bool
    ) -> None:
        self._stream = stream
        self._number = first_number
        self._max = max_line_bytes
        # Past this, a line under way is too long whatever its byte-order
        # mark or `\r` before its newline.
        self._hold = max_line_bytes + len(_UTF8_BOM) + 1
        self._under_way = b""
        # The input's first line, which may start with a BOM: wherever the
        # range starts, whatever number its first line was given.
        self._file_start = file_start
        self.read_past = 0  # bytes the last `run_of` read past its block

    def run_of(self, block: bytes) -> LineRun | None:
        """The lines that `block` ends (None: none)."""
        self.read_past = 0
        data = self._under_way + block if self._under_way else block
        contents = data.split(b"\n")
        self._under_way = contents.pop()
        if b"\r" in data:
            contents = [c[:-1] if c.endswith(b"\r") else c for c in contents]
        if len(self._under_way) <= self._hold:
            return self._run(contents) if contents else None
        head, self._under_way = self._under_way, b""
        return self._run(contents, self._skip_rest(head, first=not contents))

    def finish(self) -> LineRun | None:
        """The line under way read to its end (the range's last line, or the
        input's when it does not end with a newline)."""
        line = self._under_way
        self._under_way = b""
        while line and not line.endswith(b"\n") and len(line) <= self._hold:
            more = self._stream.readline(self._hold + 1 - len(line))
            if not more:
                return self._run([line])  # the input's end: no terminator to strip
            line += more
        if not line:
            return None
        if not line.endswith(b"\n"):
            return self._run([], self._skip_rest(line, first=True))
        return self._run([line[:-2] if line.endswith(b"\r\n") else line[:-1]])

    def _skip_rest(self, head: bytes, *, first: bool) -> tuple[bytes, int]:
        """A line too long to hold, from `head` (no newline in it): reads on
        to its end and returns what is kept of it (its first bytes, or
        nothing if it is only white space) and its full size."""
        if first and self._file_start:
            head = head.removeprefix(_UTF8_BOM)
            self._file_start = False
        size = len(head)
        blank = not head.strip()
        before_newline = head[-1:]
        while rest := self._stream.readline(_SKIP_CHUNK):
            self.read_past += len(rest)
            ended = rest.endswith(b"\n")
            body = rest[:-1] if ended else rest
            size += len(body)
            blank = blank and not body.strip()
            before_newline = body[-1:] or before_newline
            if ended:
                size -= before_newline == b"\r"
                break
        return (b"" if blank else head[: self._max], size)

    def _run(self, contents: list[bytes], long_line: tuple[bytes, int] | None = None) -> LineRun:
        """`contents` as a run, and the long line after them if any."""
        if self._file_start and contents:
            contents[0] = contents[0].removeprefix(_UTF8_BOM)
        self._file_start = False
        first = self._number
        if long_line is None and max(map(len, contents)) <= self._max:
            self._number += len(contents)
            return LineRun(range(first, self._number), contents, _NO_CUTS)
        cut = {}
        for index, content in enumerate(contents):
            if len(content) > self._max:
                blank = not content.strip()
                contents[index] = b"" if blank else content[: self._max]
                if not blank:
                    cut[first + index] = len(content)
        if long_line is not None:
            kept, size = long_line
            if kept:
                cut[first + len(contents)] = size
            contents.append(kept)
        self._number += len(contents)
        return LineRun(range(first, self._number), contents, cut)
