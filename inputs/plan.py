"""Planning the read of an import's inputs.

Before the pipeline runs, the launcher reads every input once:
- expands globs (lexicographic order, SPEC §2) and checks every input exists;
- refuses an input it could only misread: a compression it does not read
  (`.zip`), or compressed bytes under a plain name (a gzip file named
  `.ndjson`), rather than turn every line into an `INVALID_JSON` reject;
- computes the sha256 of each input's content, decompressed (its identity for
  idempotency, SPEC §4: the same content gzipped or not is the same input),
  and its line count;
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
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import smart_open

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".xz": "xz", ".lz4": "lz4"}
# Archives and compressions smart-open does not read: refused by name.
UNREADABLE = {
    ".zip": "zip",
    ".7z": "7-Zip",
    ".rar": "RAR",
    ".tar": "tar",
    ".tgz": "tar",
    ".br": "Brotli",
    ".lzma": "LZMA",
    ".snappy": "Snappy",
    ".sz": "Snappy",
    ".z": "compress (.Z)",
}
# The first bytes of compressed data, to refuse it under a plain name.
_MAGIC = (
    (b"\x1f\x8b", "gzip", ".gz"),
    (b"\x28\xb5\x2f\xfd", "zstd", ".zst"),
    (b"\xfd7zXZ\x00", "xz", ".xz"),
    (b"\x04\x22\x4d\x18", "lz4", ".lz4"),
    (b"PK\x03\x04", "zip", ".zip"),
)
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
STDIN = "-"
DEFAULT_SPLIT_BYTES = 8 << 20
_BLOCK = 1 << 20
_REMOTE_SCHEMES = ("s3://", "gs://", "http://", "https://", "gcs://")


class InputError(Exception):
    """An input that is missing or cannot be read: a usage problem, not a reject."""


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input as planned. `path` is as given (`-` for standard input);
    `source` is where its bytes are read (the spooled copy of standard input)."""

    index: int
    path: str
    sha256: str  # of the content, decompressed
    size: int  # bytes as stored
    lines: int
    compression: str | None
    source: str = ""

    @property
    def location(self) -> str:
        return self.source or self.path


@dataclass(frozen=True, slots=True)
class InputSplit:
    """A piece of one input: the lines starting in bytes [start, end).

    `end` is None for a compressed input, read whole. `first_line` is the
    1-based number of the split's first line. `path` is where the bytes are
    read; `name` is the input as the user gave it, for rejects (empty: `path`).
    """

    input_index: int
    path: str
    start: int
    end: int | None
    first_line: int
    compression: str | None
    name: str = ""

    @property
    def sequence(self) -> tuple[int, int]:
        return (self.input_index, self.first_line)

    @property
    def display_name(self) -> str:
        return self.name or self.path


def compression_of(path: str) -> str | None:
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower())


def is_remote(path: str) -> bool:
    return path.startswith(_REMOTE_SCHEMES)


def expand(patterns: Sequence[str]) -> list[str]:
    """The input files, in order: each argument in turn, a glob in sorted order.

    `-` (standard input) is kept as it is; it may be given once.
    """
    paths: list[str] = []
    if sum(1 for p in patterns if p == STDIN) > 1:
        raise InputError("input -: standard input can be read only once")
    for pattern in patterns:
        # An existing file is taken as named, even if its name looks like a glob.
        if (
            pattern == STDIN
            or is_remote(pattern)
            or not glob.has_magic(pattern)
            or os.path.isfile(pattern)
        ):
            if pattern != STDIN and not is_remote(pattern) and not os.path.isfile(pattern):
                what = "a directory, not a file" if os.path.isdir(pattern) else "not found"
                raise InputError(f"input {pattern}: {what}")
            paths.append(pattern)
            continue
        matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not matches:
            raise InputError(f"input {pattern}: the pattern matches no file")
        paths.extend(matches)
    return paths


def spool_stdin(stream: BinaryIO, folder: str) -> str:
    """Copies standard input to a file in `folder`: workers read splits by
    offset, and a pipe can be read only once."""
    path = os.path.join(folder, "stdin.ndjson")
    with open(path, "wb") as out:
        while block := stream.read(_BLOCK):
            out.write(block)
    return path


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


def refuse_unreadable(name: str, first_bytes: bytes) -> None:
    """Raises `InputError` for an input that would be misread as plain text."""
    extension = os.path.splitext(name)[1].lower()
    if extension in UNREADABLE:
        raise InputError(
            f"input {name}: {UNREADABLE[extension]} files are not read; decompress it, or "
            f"use one of {', '.join(sorted(COMPRESSIONS))}"
        )
    if extension in COMPRESSIONS:
        return
    for magic, what, suffix in _MAGIC:
        if first_bytes.startswith(magic):
            if name == STDIN or suffix not in COMPRESSIONS:
                hint = "decompress it first"
            else:
                hint = f"rename it to end in {suffix}"
            raise InputError(f"input {name}: holds {what}-compressed data; {hint}")
    if _BZIP2.match(first_bytes):
        hint = "decompress it first" if name == STDIN else "rename it to end in .bz2"
        raise InputError(f"input {name}: holds bzip2-compressed data; {hint}")


def _plan_plain(
    index: int, path: str, name: str, split_bytes: int, params: dict[str, Any] | None
) -> tuple[InputFile, list[InputSplit]]:
    digest = hashlib.sha256()
    splits: list[InputSplit] = []
    offset = 0  # absolute offset of the current block
    newlines = 0  # newlines before the current block
    split_start, split_first_line = 0, 1
    next_cut = split_bytes
    last_byte = b""
    shown = "" if name == path else name
    with open_raw(path, params) as stream:
        for block in _blocks(stream):
            if not offset:
                refuse_unreadable(name, block[:16])
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
                    InputSplit(index, path, split_start, boundary, split_first_line, None, shown)
                )
                split_start, split_first_line = boundary, lines_before + 1
                next_cut = boundary + split_bytes
                search = next_cut - offset
            newlines += block.count(b"\n")
            offset += len(block)
            last_byte = block[-1:]
    if split_start < offset:
        splits.append(InputSplit(index, path, split_start, offset, split_first_line, None, shown))
    lines = newlines + (1 if offset and last_byte != b"\n" else 0)
    source = "" if name == path else path
    return InputFile(index, name, digest.hexdigest(), offset, lines, None, source), splits


def _plan_compressed(
    index: int, path: str, name: str, compression: str, params: dict[str, Any] | None
) -> tuple[InputFile, list[InputSplit]]:
    size = 0
    with open_raw(path, params) as stream:
        for block in _blocks(stream):
            size += len(block)
    # The identity is the decompressed content (SPEC §4), hashed while the
    # lines are counted: one pass that also proves the archive is whole.
    digest = hashlib.sha256()
    newlines = 0
    last_byte = b""
    total = 0
    with open_text_stream(path, params) as stream:
        for block in _blocks(stream):
            digest.update(block)
            newlines += block.count(b"\n")
            total += len(block)
            last_byte = block[-1:]
    lines = newlines + (1 if total and last_byte != b"\n" else 0)
    shown = "" if name == path else name
    splits = [InputSplit(index, path, 0, None, 1, compression, shown)] if total else []
    source = "" if name == path else path
    file = InputFile(index, name, digest.hexdigest(), size, lines, compression, source)
    return file, splits


def plan(
    paths: Sequence[str],
    *,
    split_bytes: int = DEFAULT_SPLIT_BYTES,
    transport_params: dict[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
) -> tuple[list[InputFile], list[InputSplit]]:
    """Fingerprints every input and cuts it into splits. Raises `InputError`.

    `sources` maps an input as given to where its bytes are (`-` to the
    spooled standard input).
    """
    files: list[InputFile] = []
    splits: list[InputSplit] = []
    for index, name in enumerate(paths):
        path = (sources or {}).get(name, name)
        compression = compression_of(name)
        try:
            if compression is None:
                file, pieces = _plan_plain(index, path, name, split_bytes, transport_params)
            else:
                file, pieces = _plan_compressed(index, path, name, compression, transport_params)
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"input {name}: cannot be read: {e}") from e
        files.append(file)
        splits.extend(pieces)
    return files, splits
