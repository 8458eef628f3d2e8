"""Progress markers: how a run on a terminal shows lines read and lines/s.

Beam reports metrics only once a run is over, so the workers drop a tiny file
per finished split or bucket in the run's progress folder, and the launcher
sums them while it waits. Only local runs ask for it (`progress_dir` None
otherwise), so remote workers never write there.
"""

from __future__ import annotations

import os


def mark(progress_dir: str | None, name: str, value: int) -> None:
    if progress_dir is None:
        return
    path = os.path.join(progress_dir, name)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(value))
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
