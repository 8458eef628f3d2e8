"""Planning the read of an import's inputs, without reading their content.

The launcher only lists the inputs (SPEC §1, §2):
- expands globs (lexicographic order) and checks every input exists;
- takes each input's size and modification time from the file system
  (object metadata for remote inputs);
- refuses an input it could only misread: a compression it does not read
  (`.zip`), or compressed bytes under a plain name (a gzip file named
  `.ndjson`), by name and by its first 16 bytes, rather than turn every line
  into an `INVALID_JSON` reject;
- cuts each plain input into byte ranges of about `split_bytes`
  (`split_ranges`), cut anywhere: a range holds the lines that start in it.

Everything that reads content happens in the pipeline, in parallel
(`inputs.content`): counting each range's newlines, whose prefix sums give every
range the number of its first line, and hashing each input's content for its
identity (SPEC §4). A compressed input cannot be cut: it is one range, read
whole by one worker.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from profile_import.core.locations import Location, LocationError, is_remote, parse
from profile_import.stores import buckets

from . import remote

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


class InputError(Exception):
    """An input that is missing or cannot be read: a usage problem, not a reject."""


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input as listed. `path` is as given (`-` for standard input);
    `source` is where its bytes are read when that is elsewhere (the spooled
    copy of standard input). `size` is in bytes as stored, None if unknown."""

    index: int
    path: str
    size: int | None
    compression: str | None
    source: str = ""
    modified_ns: int | None = None

    @property
    def location(self) -> str:
        return self.source or self.path


@dataclass(frozen=True, slots=True)
class InputSplit:
    """A piece of one input: the lines that start in bytes [start, end).

    `end` is None for an input read whole (compressed, or of unknown size).
    `first_line` is the 1-based number of the first line that starts in the
    range (0 until the pipeline has numbered it). `path` is where the bytes
    are read; `name` is the input as the user gave it, for rejects (empty:
    `path`).
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
    def size(self) -> int | None:
        """The bytes of the range (None: read whole)."""
        return None if self.end is None else self.end - self.start

    @property
    def display_name(self) -> str:
        return self.name or self.path


def compression_of(path: str) -> str | None:
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower())


def location_of(pattern: str) -> Location:
    """An input as given, parsed (`core.locations`). Raises `InputError`."""
    try:
        return parse(pattern, "input")
    except LocationError as e:
        raise InputError(f"input {pattern}: {e}") from e


def expand(patterns: Sequence[str]) -> list[str]:
    """The input files, in order: each argument in turn, a glob in sorted order.

    `-` (standard input) is kept as it is; it may be given once.
    """
    paths: list[str] = []
    if sum(1 for p in patterns if p == STDIN) > 1:
        raise InputError("input -: standard input can be read only once")
    for pattern in patterns:
        if pattern == STDIN:
            paths.append(pattern)
            continue
        location = location_of(pattern)
        if location.is_object and glob.has_magic(location.path):
            try:
                objects = remote.expand_glob(location)
            except Exception as e:
                raise InputError(f"input {pattern}: cannot be listed: {e}") from e
            if not objects:
                raise InputError(f"input {pattern}: the pattern matches no object")
            # As the user spelled the pattern: a `gcs://` glob's objects stay `gcs://`.
            paths.extend(o.given for o in objects)
            continue
        if location.is_remote:
            paths.append(pattern)
            continue
        local = location.path
        # An existing file is taken as named, even if its name looks like a glob.
        if not glob.has_magic(local) or os.path.isfile(local):
            if not os.path.isfile(local):
                what = "a directory, not a file" if os.path.isdir(local) else "not found"
                raise InputError(f"input {pattern}: {what}")
            paths.append(pattern)
            continue
        matches = sorted(p for p in glob.glob(local) if os.path.isfile(p))
        if not matches:
            raise InputError(f"input {pattern}: the pattern matches no file")
        paths.extend(matches)
    return paths


def spool_stdin(stream: BinaryIO, folder: str) -> str:
    """Copies standard input to a file in `folder`: workers read inputs by
    byte ranges, and a pipe can be read only once."""
    path = os.path.join(folder, "stdin.ndjson")
    with open(path, "wb") as out:
        while block := stream.read(_BLOCK):
            out.write(block)
    return path


def open_raw(path: str, transport_params: dict[str, Any] | None = None) -> Any:
    """The input's bytes as stored (no decompression)."""
    return _open(path, "disable", transport_params)


def open_text_stream(path: str, transport_params: dict[str, Any] | None = None) -> Any:
    """The input's bytes, decompressed according to its extension."""
    return _open(path, "infer_from_extension", transport_params)


def _open(path: str, compression: str, transport_params: dict[str, Any] | None) -> Any:
    if not is_remote(path):
        if compression == "disable":
            return open(path, "rb")
    elif parse(path).is_object:
        return buckets.open_object(
            path, "rb", compression=compression, transport_params=transport_params
        )
    # Imported when used: with its cloud clients it takes ~0.3 s, a quarter
    # of a small import's time, and local plain inputs never need it.
    import smart_open

    return smart_open.open(
        path, "rb", compression=compression, transport_params=transport_params or {}
    )


def decompressed(raw: Any, compression: str) -> Any:
    """The bytes of `raw` (from `open_raw`) decompressed (`compression` is one
    of `COMPRESSIONS`); closing it leaves `raw` open."""
    from smart_open.compression import compression_wrapper  # imported when used (see open_raw)

    extension = next(ext for ext, name in COMPRESSIONS.items() if name == compression)
    return compression_wrapper(raw, "rb", compression=extension)


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


def _list_one(index: int, name: str, path: str, params: dict[str, Any] | None) -> InputFile:
    compression = compression_of(name)
    size: int | None = None
    modified_ns: int | None = None
    if not is_remote(path):
        stat = os.stat(path)
        size, modified_ns = stat.st_size, stat.st_mtime_ns
    else:
        try:
            info = remote.stat(path)
        except remote.NotFound as e:
            raise InputError(f"input {name}: not found") from e
        size, modified_ns = info.size, info.modified_ns
    with open_raw(path, params) as stream:
        refuse_unreadable(name, stream.read(16))
    source = "" if name == path else path
    return InputFile(index, name, size, compression, source, modified_ns)


def list_inputs(
    paths: Sequence[str],
    *,
    transport_params: dict[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
) -> list[InputFile]:
    """The inputs with their metadata, in order. Raises `InputError`.

    `sources` maps an input as given to where its bytes are (`-` to the
    spooled standard input).
    """
    files = []
    for index, name in enumerate(paths):
        # Read where the name points (a `file://` URL's path, `gs://` for
        # `gcs://`); reported as given.
        path = (sources or {}).get(name) or location_of(name).url
        try:
            files.append(_list_one(index, name, path, transport_params))
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"input {name}: cannot be read: {e}") from e
    return files


def split_ranges(file: InputFile, split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[InputSplit]:
    """The byte ranges of one input, not yet numbered (`first_line` 0)."""
    name = "" if file.location == file.path else file.path
    if file.compression is not None or file.size is None:
        return [InputSplit(file.index, file.location, 0, None, 0, file.compression, name)]
    return [
        InputSplit(
            file.index, file.location, start, min(start + split_bytes, file.size), 0, None, name
        )
        for start in range(0, file.size, split_bytes)
    ]


def contiguous_parts(files: Sequence[InputFile], parts: int) -> list[list[InputSplit]]:
    """The inputs as at most `parts` lists of splits of about equal bytes, each
    list following the one before in input order (the ranges the local
    engine's workers claim, `pipelines.in_process.plan_for`).

    A plain input is cut where a list's share ends, anywhere (a range holds
    the lines that start in it); a range that starts past its input's first
    byte is not numbered yet (`first_line` 0). An input in one list is read
    whole; a compressed input always is, by the list where it starts. Empty
    lists are left out.
    """
    total = sum(f.size or 0 for f in files)
    share = max(1, -(-total // parts))
    cut: list[list[InputSplit]] = [[] for _ in range(parts)]
    before = 0  # bytes of the inputs before this one
    for file in files:
        size = file.size or 0
        name = "" if file.location == file.path else file.path
        if file.compression is not None or file.size is None or size == 0:
            whole = InputSplit(file.index, file.location, 0, None, 1, file.compression, name)
            cut[min(before // share, parts - 1)].append(whole)
            before += size
            continue
        start = 0
        while start < size:
            part = min((before + start) // share, parts - 1)
            end = size if part == parts - 1 else min(size, (part + 1) * share - before)
            read_whole = start == 0 and end == size
            cut[part].append(
                InputSplit(
                    file.index,
                    file.location,
                    start,
                    None if read_whole else end,
                    1 if start == 0 else 0,
                    None,
                    name,
                )
            )
            start = end
        before += size
    return [splits for splits in cut if splits]
