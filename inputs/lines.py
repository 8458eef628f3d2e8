"""Reading the lines of one input split.

Lines end with `\\n` or `\\r\\n`; the terminator is not part of a line. A UTF-8
byte-order mark at the start of a file is dropped. A line longer than the run's
limit is never held whole: its first `max_line_bytes` are kept, the rest is
skipped, and its full size is reported so the check can reject it. A line of
white space only comes out empty, whatever its length: it is blank, never
rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def read_lines(
    split: InputSplit,
    max_line_bytes: int,
    transport_params: dict[str, Any] | None = None,
    position: ReadPosition | None = None,
) -> Iterator[Line]:
    """Every line that starts in the split, with its 1-based number; `position`
    follows the bytes read."""
    try:
        yield from _read(split, max_line_bytes, transport_params, position)
    except InputReadError:
        raise
    except Exception as e:
        raise InputReadError(f"input {split.display_name}: read failed: {e}") from e


def _read(
    split: InputSplit,
    max_line_bytes: int,
    transport_params: dict[str, Any] | None,
    meter: ReadPosition | None,
) -> Iterator[Line]:
    # Room for the longest allowed line and its `\r\n`.
    limit = max_line_bytes + 2
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
        remaining = None if split.end is None else split.end - position
        number = split.first_line
        readline = stream.readline
        while remaining is None or remaining > 0:
            # A first line may start with a byte-order mark, which is not content.
            line_limit = limit + len(_UTF8_BOM) if number == 1 else limit
            chunk = readline(line_limit)
            if not chunk:
                break
            consumed = len(chunk)
            if number == 1 and chunk.startswith(_UTF8_BOM):
                chunk = chunk[len(_UTF8_BOM) :]
            if chunk.endswith(b"\n") or consumed < line_limit:
                content = chunk[:-2] if chunk.endswith(b"\r\n") else chunk.rstrip(b"\n")
                size = len(content)
                blank = not content.strip()
            else:
                # Too long: keep the head, skip to the end of the line.
                content, size, blank = chunk, len(chunk), not chunk.strip()
                while rest := readline(_SKIP_CHUNK):
                    consumed += len(rest)
                    blank = blank and not rest.strip()
                    if rest.endswith(b"\n"):
                        size += len(rest) - (2 if rest.endswith(b"\r\n") else 1)
                        break
                    size += len(rest)
            if blank:
                # Only white space: a blank line, however long (SPEC §1).
                yield Line(number, b"", 0)
            else:
                yield Line(number, content[:max_line_bytes], size)
            number += 1
            if remaining is not None:
                remaining -= consumed
        if meter is not None:
            meter.stop()
