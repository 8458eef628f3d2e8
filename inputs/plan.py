"""Planning the read of an import's inputs.

Before the pipeline runs, the launcher reads every input once (a compressed
one twice: stored bytes, then decompressed):
- expands globs (lexicographic order, SPEC §2) and checks every input exists;
- computes each input's sha256 (the idempotency fingerprint, SPEC §4) and its
  line count;
- cuts plain files into splits of about `split_bytes` that start on a line
  boundary, each knowing the number of its first line. Workers then read the
  splits in parallel and still report exact 1-based line numbers, and every
  line gets the sequence (input index, line number) that orders a user's
  commands, whatever the runner does;
- decompresses compressed inputs fully (they cannot be split), which both
  counts their lines and turns a corrupt archive into a clear error before
  anything runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import smart_open

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
DEFAULT_SPLIT_BYTES = 8 << 20
_BLOCK = 1 << 20
_REMOTE_SCHEMES = ("s3://", "gs://", "http://", "https://", "gcs://")


class InputError(Exception):
    """An input that is missing or cannot be read: a usage problem, not a reject."""


@dataclass(frozen=True, slots=True)
class InputFile:
    index: int
    path: str
    sha256: str
    size: int
    lines: int
    compression: str | None


@dataclass(frozen=True, slots=True)
class InputSplit:
    """A piece of one input: the lines starting in bytes [start, end).

    `end` is None for a compressed input, read whole. `first_line` is the
    1-based number of the split's first line.
    """

    input_index: int
    path: str
    start: int
    end: int | None
    first_line: int
    compression: str | None

    @property
    def sequence(self) -> tuple[int, int]:
        return (self.input_index, self.first_line)


def compression_of(path: str) -> str | None:
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower())


def is_remote(path: str) -> bool:
    return path.startswith(_REMOTE_SCHEMES)


def expand(patterns: Sequence[str]) -> list[str]:
    """The input files, in order: each argument in turn, a glob in sorted order."""
    paths: list[str] = []
    for pattern in patterns:
        # An existing file is taken as named, even if its name looks like a glob.
        if is_remote(pattern) or not glob.has_magic(pattern) or os.path.isfile(pattern):
            if not is_remote(pattern) and not os.path.isfile(pattern):
                what = "a directory, not a file" if os.path.isdir(pattern) else "not found"
                raise InputError(f"input {pattern}: {what}")
            paths.append(pattern)
            continue
        matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not matches:
            raise InputError(f"input {pattern}: the pattern matches no file")
        paths.extend(matches)
    return paths


def open_raw(path: str, transport_params: dict[str, Any] | None = None) -> Any:
    """The input's bytes as stored (no decompression)."""
    if not is_remote(path):
        return open(path, "rb")
    return smart_open.open(
        path, "rb", compression="disable", transport_params=transport_params or {}
    )


def open_text_stream(path: str, transport_params: dict[str, Any] | None = None) -> Any:
    """The input's bytes, decompressed according to its extension."""
    return smart_open.open(
        path, "rb", compression="infer_from_extension", transport_params=transport_params or {}
    )


def _blocks(stream: Any) -> Iterator[bytes]:
    while block := stream.read(_BLOCK):
        yield block


def _plan_plain(
    index: int, path: str, split_bytes: int, params: dict[str, Any] | None
) -> tuple[InputFile, list[InputSplit]]:
    digest = hashlib.sha256()
    splits: list[InputSplit] = []
    offset = 0  # absolute offset of the current block
    newlines = 0  # newlines before the current block
    split_start, split_first_line = 0, 1
    next_cut = split_bytes
    last_byte = b""
    with open_raw(path, params) as stream:
        for block in _blocks(stream):
            digest.update(block)
            # Cut at the first line boundary at or after each target offset.
            search = max(next_cut - offset, 0)
            while search < len(block):
                newline = block.find(b"\n", search)
                if newline < 0:
                    break
                boundary = offset + newline + 1
                lines_before = newlines + block.count(b"\n", 0, newline + 1)
                splits.append(
                    InputSplit(index, path, split_start, boundary, split_first_line, None)
                )
                split_start, split_first_line = boundary, lines_before + 1
                next_cut = boundary + split_bytes
                search = next_cut - offset
            newlines += block.count(b"\n")
            offset += len(block)
            last_byte = block[-1:]
    if split_start < offset:
        splits.append(InputSplit(index, path, split_start, offset, split_first_line, None))
    lines = newlines + (1 if offset and last_byte != b"\n" else 0)
    return InputFile(index, path, digest.hexdigest(), offset, lines, None), splits


def _plan_compressed(
    index: int, path: str, compression: str, params: dict[str, Any] | None
) -> tuple[InputFile, list[InputSplit]]:
    digest = hashlib.sha256()
    size = 0
    with open_raw(path, params) as stream:
        for block in _blocks(stream):
            digest.update(block)
            size += len(block)
    newlines = 0
    last_byte = b""
    total = 0
    with open_text_stream(path, params) as stream:
        for block in _blocks(stream):
            newlines += block.count(b"\n")
            total += len(block)
            last_byte = block[-1:]
    lines = newlines + (1 if total and last_byte != b"\n" else 0)
    splits = [InputSplit(index, path, 0, None, 1, compression)] if total else []
    return InputFile(index, path, digest.hexdigest(), size, lines, compression), splits


def plan(
    paths: Sequence[str],
    *,
    split_bytes: int = DEFAULT_SPLIT_BYTES,
    transport_params: dict[str, Any] | None = None,
) -> tuple[list[InputFile], list[InputSplit]]:
    """Fingerprints every input and cuts it into splits. Raises `InputError`."""
    files: list[InputFile] = []
    splits: list[InputSplit] = []
    for index, path in enumerate(paths):
        compression = compression_of(path)
        try:
            if compression is None:
                file, pieces = _plan_plain(index, path, split_bytes, transport_params)
            else:
                file, pieces = _plan_compressed(index, path, compression, transport_params)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"input {path}: cannot be read: {e}") from e
        files.append(file)
        splits.extend(pieces)
    return files, splits
