"""Progress markers: how a run on a terminal shows lines read and buckets applied.

Beam reports metrics only once a run is over, so the workers drop a tiny file
per finished split or bucket in the run's progress folder, and the launcher
sums them while it waits. Only local runs ask for it (`progress_dir` None
otherwise), so remote workers never write there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def mark(progress_dir: str | None, name: str, value: int) -> None:
    if progress_dir is None:
        return
    _write(progress_dir, name, str(value))


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
