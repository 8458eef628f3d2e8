"""Reading a file of store lines sorted by key without reading all of it.

A bucket file holds `<key>\\t<record>\\n` lines sorted by key (`core.records`);
no key or record holds a newline. So a reader can bisect on byte offsets:
seek anywhere, drop the partial line, and the next line's key says on which
side the wanted key lies. `list --cursor` starts each bucket right after the
cursor's key this way, and `get --ids` finds each asked key in ~log2(size)
seeks instead of reading the bucket up to it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from profile_import.core import records

# Below this many bytes a range is read line by line: cheaper than more seeks.
LINEAR_BYTES = 16 * 1024
# Keys asked closer than this on average: one sequential pass beats bisecting.
DENSE_BYTES = 8 * 1024


def _key(line: bytes) -> bytes:
    end = line.find(records.SEPARATOR)
    if end < 0:
        raise ValueError(f"not a store line: {line[:80]!r}")
    return line[:end]


def offset_of(f: BinaryIO, key: bytes, *, strictly_after: bool, start: int = 0) -> int:
    """The offset of the first line at or after `start` whose key is > `key`
    (`strictly_after`) or >= `key`; the file's size when there is none.

    `start` must be a line start.
    """
    size = f.seek(0, os.SEEK_END)  # a local file or a bucket's object alike

    def before(line_key: bytes) -> bool:  # the line comes before the answer
        return line_key <= key if strictly_after else line_key < key

    lo, hi = start, size  # the answer is a line start in [lo, hi]
    while hi - lo > LINEAR_BYTES:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # the rest of the line `mid` falls in
        pos = f.tell()
        if pos >= hi:
            break  # one long line spans mid..hi: finish linearly from lo
        line = f.readline()
        if before(_key(line)):
            lo = pos + len(line)
        else:
            hi = pos
    f.seek(lo)
    pos = lo
    while pos < hi:
        line = f.readline()
        if not line or not before(_key(line)):
            break
        pos += len(line)
    return pos


def keyed_lines(
    path: str,
    after: bytes | None = None,
    keep: Callable[[bytes], bool] | None = None,
    on_missing: Callable[[], Exception] | None = None,
    opener: Callable[[str], Any] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of the lines of a sorted file with key > `after` that `keep`
    accepts (it sees the record), in key order."""
    try:
        # Buffered: a store's opener gives a raw stream.
        f = open(path, "rb") if opener is None else io.BufferedReader(opener(path), 1 << 20)  # noqa: SIM115
    except FileNotFoundError as e:
        if on_missing is None:
            raise
        raise on_missing() from e
    with f:
        if after is not None:
            f.seek(offset_of(f, after, strictly_after=True))
        split = records.split
        for line in f:
            key, record = split(line)
            if keep is None or keep(record):
                yield key, record


def find_sorted(
    f: BinaryIO, keys: Sequence[bytes], size: int | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of each of `keys` (sorted, distinct) found in a sorted file,
    in one forward pass: by bisecting what is left when the keys are sparse, by
    reading every line when they are dense."""
    if not keys:
        return
    if size is None:
        size = f.seek(0, os.SEEK_END)
    if len(keys) * DENSE_BYTES > size:
        yield from _merge_sorted(f, keys)
        return
    pos = 0
    for key in keys:
        pos = offset_of(f, key, strictly_after=False, start=pos)
        f.seek(pos)
        line = f.readline()
        if not line:
            return
        line_key, record = records.split(line)
        if line_key == key:
            yield key, record
            pos += len(line)


def _merge_sorted(f: BinaryIO, keys: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
    f.seek(0)
    index, count = 0, len(keys)
    for line in f:
        key = _key(line)
        while keys[index] < key:
            index += 1
            if index == count:
                return
        if key == keys[index]:
            yield records.split(line)
            index += 1
            if index == count:
                return


def find_mapped(data: Any, keys: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of each of `keys` (sorted, distinct) found in a sorted file
    held in memory (`bytes`, or an `mmap` of a local file, read only where looked).

    The keys of one import are spread over the whole file, each some lines
    after the one before: each is found by galloping from where the last one
    was (the first probe half the last gap ahead, then twice as far each
    time) and bisecting the last step, on line starts, with the searches in
    C (`find`, `rfind`): ~10 probes a key.
    """
    size = len(data)
    sep, newline = records.SEPARATOR, b"\n"

    def key_at(start: int) -> bytes:
        line_end = data.find(newline, start)
        end = data.find(sep, start, size if line_end < 0 else line_end)
        if end < 0:
            raise ValueError(f"not a store line at byte {start}")
        return bytes(data[start:end])

    def line_start(at: int, floor: int) -> int:
        """The start of the line holding byte `at`, no lower than `floor`."""
        return max(int(data.rfind(newline, floor, at)) + 1, floor)

    lo = 0  # a line start: every line before it has a key < the keys still asked
    gap = 1024  # how far the last key was from the one before: where to probe first
    for key in keys:
        if lo >= size:
            return
        # Gallop: find a line start `hi` whose key is >= key (or the end).
        began = lo
        step = max(gap // 2, 512)
        hi = lo
        while True:
            probe = min(lo + step, size)
            if probe >= size:
                hi = size
                break
            start = line_start(probe, lo)
            if key_at(start) >= key:
                hi = start
                break
            lo = start
            step *= 2
        # Bisect [lo, hi) down to the first line whose key is >= key.
        while lo < hi:
            start = line_start((lo + hi) // 2, lo)
            if key_at(start) < key:
                lo = data.find(newline, start) + 1 or size
            else:
                hi = start
        if lo >= size:
            return
        end = data.find(newline, lo)
        end = size if end < 0 else end
        gap = lo - began
        line_key = key_at(lo)
        if line_key == key:
            yield key, bytes(data[lo + len(key) + 1 : end])
            lo = end + 1
