"""Reading a store file checked against its record (lines, size, crc32)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any

from profile_import.core import records, segments

from ..base import (
    StoreError,
)
from ..files import Files
from .manifest import BLOCK, Shard


class Summing(io.RawIOBase):
    """A file that sums what passes through it: its size, crc32 and last byte.

    Wrapped in a buffered reader or writer, it sees one call per block (1 MiB),
    not one per line: checking a file costs a crc32 over its blocks (~3 GB/s).
    """

    def __init__(self, raw: Any, *, writing: bool) -> None:
        super().__init__()
        self._raw = raw
        self._writing = writing
        self.bytes = 0
        self.crc32 = 0
        self.last = b"\n"

    def readable(self) -> bool:
        return not self._writing

    def writable(self) -> bool:
        return self._writing

    def _sum(self, data: memoryview) -> None:
        if data:
            self.bytes += len(data)
            self.crc32 = zlib.crc32(data, self.crc32)
            self.last = bytes(data[-1:])

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer) or 0
        self._sum(memoryview(buffer)[:n])
        return n

    def write(self, data: Any) -> int:
        n = self._raw.write(data) or 0
        self._sum(memoryview(data)[:n])
        return n


def damaged(url: str, problem: str, *, verify: bool = True) -> StoreError:
    hint = f" (`profile-import verify --store {url}` lists it all)" if verify else ""
    return StoreError(f"store {url} is damaged: {problem}{hint}")


def read_checked(files: Files, url: str, shard: Shard) -> Iterator[bytes]:
    """The lines of a bucket file; read to its end, checked against `shard`."""
    try:
        raw = files.open_read(shard.path)
    except FileNotFoundError as e:
        raise damaged(url, f"{shard.path} is missing") from e
    lines = 0
    with raw:
        summing = Summing(raw, writing=False)
        for line in io.BufferedReader(summing, BLOCK):
            lines += 1
            yield line
    if summing.last != b"\n":
        raise damaged(url, f"{shard.path}: its last line is cut short")
    problem = shard.mismatch(lines, summing.bytes, summing.crc32)
    if problem:
        raise damaged(url, problem)


def read_keyed(files: Files, url: str, shard: Shard) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of a bucket file's lines, checked as `read_checked`; a line
    that is not a store line is damage (named once the file is read on to its
    end, where a difference from its record is named first)."""
    lines = read_checked(files, url, shard)
    sep = records.SEPARATOR
    for n, line in enumerate(lines, 1):
        end = line.find(sep)
        if end < 0:
            for _ in lines:
                pass
            raise damaged(url, f"{shard.path} line {n} is not a store line")
        yield line[:end], line


def read_merged(files: Files, url: str, shard: Shard) -> Iterator[tuple[bytes, bytes]]:
    """(key, line) of a bucket's profiles: its base and deltas merged."""
    base = read_keyed(files, url, shard.base)
    return segments.merge(base, [read_keyed(files, url, d) for d in shard.deltas])
