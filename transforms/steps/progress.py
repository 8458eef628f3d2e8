"""Progress markers: how a run on a terminal shows lines read and buckets applied.

Beam reports metrics only once a run is over, so the workers of either
engine drop tiny files in the run's progress folder: for each split, the
lines and bytes read so far (rewritten as the check goes, `marker`) and the
buckets it feeds; for each bucket applied, its commands. The launcher sums
them while it waits (`runners.progress_display`). Only local runs ask for
it (`progress_dir` None otherwise), so remote workers never write there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import suppress


def mark(progress_dir: str | None, name: str, value: int) -> None:
    if progress_dir is None:
        return
    _write(progress_dir, name, str(value))


def marker(
    progress_dir: str | None, split_name: str, size: int | None
) -> Callable[[int, int], None] | None:
    """A split's check progress (`check_lines.Progress`: lines read, bytes
    gone through) as its `read-` and `bytes-` markers; `size`: the bytes of
    the range, which the read of its last line may pass (None: read whole)."""
    if progress_dir is None:
        return None

    def mark_split(lines: int, read_bytes: int) -> None:
        mark(progress_dir, f"read-{split_name}", lines)
        mark(
            progress_dir,
            f"bytes-{split_name}",
            read_bytes if size is None else min(read_bytes, size),
        )

    return mark_split


def clear(progress_dir: str | None) -> None:
    """Removes every marker: the work they count is started again."""
    if progress_dir is None:
        return
    for name in os.listdir(progress_dir):
        with suppress(FileNotFoundError):
            os.remove(os.path.join(progress_dir, name))


def _write(progress_dir: str, name: str, text: str) -> None:
    path = os.path.join(progress_dir, name)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, path)


def read(progress_dir: str, prefix: str) -> tuple[int, int]:
    """(markers, sum of their values) for the markers named `prefix*`."""
    count = total = 0
    try:
        names = os.listdir(progress_dir)
    except FileNotFoundError:
        return 0, 0
    for name in names:
        if name.startswith(prefix) and not name.endswith(".tmp"):
            try:
                with open(os.path.join(progress_dir, name), encoding="ascii") as f:
                    total += int(f.read() or 0)
                count += 1
            except (OSError, ValueError):
                continue  # replaced while read; counted next time
    return count, total


def mark_members(progress_dir: str | None, name: str, members: Iterable[int]) -> None:
    """A marker holding a set of small integers (the buckets a split feeds)."""
    if progress_dir is None:
        return
    mask = 0
    for member in members:
        mask |= 1 << member
    # Hexadecimal: a decimal str() of a mask over ~14,000 bits is refused by Python.
    _write(progress_dir, name, format(mask, "x"))


def read_members(progress_dir: str, prefix: str) -> int:
    """How many distinct members the markers named `prefix*` hold together."""
    mask = 0
    try:
        names = os.listdir(progress_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(prefix) and not name.endswith(".tmp"):
            try:
                with open(os.path.join(progress_dir, name), encoding="ascii") as f:
                    mask |= int(f.read() or "0", 16)
            except (OSError, ValueError):
                continue  # replaced while read; counted next time
    return mask.bit_count()
