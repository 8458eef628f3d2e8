"""What the pipeline reads of an input before it parses it (see `plan`).

- `count_range`: the newlines of one byte range, for numbering the ranges
  (`core.numbering`); ranges are counted in parallel.
- `hash_content`: the sha256 of an input's content, decompressed, and its
  line count: its identity (SPEC §4), one sequential pass per input. Inputs
  are hashed in parallel with each other and with the parse, and the result
  is needed only before anything is applied.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from profile_import.core.numbering import RangeCount, line_count

from .plan import InputFile, InputSplit, open_raw, open_text_stream

_BLOCK = 1 << 20


class ReadError(Exception):
    """An input that broke while read: vanished, corrupt, unreachable."""


class ContentHash(NamedTuple):
    input_index: int
    sha256: str
    size: int  # bytes of content, decompressed
    lines: int


def count_range(split: InputSplit, transport_params: dict[str, Any] | None = None) -> RangeCount:
    """The newlines in bytes [start, end) of a plain input."""
    assert split.end is not None and split.compression is None
    newlines = 0
    last = b""
    try:
        with open_raw(split.path, transport_params) as stream:
            stream.seek(split.start)
            remaining = split.end - split.start
            while remaining > 0:
                block = stream.read(min(_BLOCK, remaining))
                if not block:
                    raise ReadError(
                        f"input {split.display_name}: ended at byte {split.end - remaining}, "
                        f"before byte {split.end}: it changed while read"
                    )
                newlines += block.count(b"\n")
                last = block[-1:]
                remaining -= len(block)
    except ReadError:
        raise
    except Exception as e:
        raise ReadError(f"input {split.display_name}: read failed: {e}") from e
    return RangeCount(split.start, newlines, last == b"\n")


def hash_content(file: InputFile, transport_params: dict[str, Any] | None = None) -> ContentHash:
    """The input's identity: sha256 of its decompressed content, and its lines."""
    digest = hashlib.sha256()
    newlines = size = 0
    last = b""
    try:
        opener = open_raw if file.compression is None else open_text_stream
        with opener(file.location, transport_params) as stream:
            while block := stream.read(_BLOCK):
                digest.update(block)
                newlines += block.count(b"\n")
                size += len(block)
                last = block[-1:]
    except Exception as e:
        raise ReadError(f"input {file.path}: cannot be read: {e}") from e
    if file.compression is None and file.size is not None and size != file.size:
        raise ReadError(
            f"input {file.path}: {size} bytes read of {file.size} listed: it changed while read"
        )
    return ContentHash(
        file.index, digest.hexdigest(), size, line_count(newlines, size, last == b"\n")
    )
