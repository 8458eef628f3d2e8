"""The progress line of a run on a terminal, drawn by tqdm.

The pipeline reads every line first, then applies bucket after bucket (the
shuffle between them is a barrier), so the line shows the stage at hand:

    read   45%|████▌     | 137M/305M B [00:05<00:06, 27.4MB/s, 450,112 lines]
    apply  19%|█▉        | 12/64 buckets [00:03<00:13, 4.10 buckets/s, 1,000,000 lines read]

The read stage counts the bytes of the inputs as listed (the launcher reads no
input content, so the line count is known only once read), with the lines
read so far beside them; a compressed input's bytes count once it is read.

with the stage's elapsed time, the time it has left, and its current rate:
tqdm smooths the rate over its recent updates (one a second here, each
weighing 30%), so a slowdown shows within a few seconds rather than being
averaged away since the start.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import NoReturn, TextIO

from tqdm import tqdm

from profile_import.transforms.steps import progress

POLL_SECONDS = 1.0
# tqdm's default line, with the unit after the counts and a rate never inverted
# (a slow stage shows "0.50 buckets/s", not "2.00s/ buckets").
BAR_FORMAT = (
    "{desc:5} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit} "
    "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
)


@contextlib.contextmanager
def shown(
    enabled: bool, progress_dir: str | None, total_bytes: int, stream: TextIO
) -> Iterator[None]:
    """While the block runs, draws the run's progress on `stream` from the workers' markers."""
    if not enabled or progress_dir is None:
        yield
        return
    stop = threading.Event()
    started = time.time()
    sized = _has_size(stream)

    def stage(name: str, unit: str, total: int | None, big_numbers: bool) -> tqdm[NoReturn]:
        bar: tqdm[NoReturn] = tqdm(
            total=total,
            desc=name,
            unit=unit,
            unit_scale=big_numbers,
            bar_format=BAR_FORMAT,
            file=stream,
            leave=False,
            smoothing=0.3,
            miniters=0,  # redrawn at every poll
            delay=POLL_SECONDS,  # drawn first at the next poll, with the elapsed time below
            # Follows the terminal's width; a terminal that reports no size
            # (0x0, as some containers' do) would make tqdm draw nothing.
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
        )
        bar.start_t = started  # the elapsed time is the pipeline's
        return bar

    bars = [stage("read", "B", total_bytes or None, True)]

    def poll() -> None:
        bar = bars[-1]
        _, lines = progress.read(progress_dir, "read-")
        if len(bars) == 1:
            _, read_bytes = progress.read(progress_dir, "bytes-")
            bar.set_postfix_str(f"{lines:,} lines", refresh=False)
            bar.update(read_bytes - bar.n)
            # Applying starts once every line is read (the shuffle is a barrier).
            if not progress.read(progress_dir, "apply-")[0]:
                return
            bar.close()
            bar = stage("apply", " buckets", 0, False)
            bar.set_postfix_str(f"{lines:,} lines read", refresh=False)
            bars.append(bar)
        # Each split marks the buckets it feeds before its lines are counted.
        bar.total = progress.read_members(progress_dir, "buckets-")
        applied, _ = progress.read(progress_dir, "apply-")
        bar.update(applied - bar.n)

    def follow() -> None:
        while not stop.wait(POLL_SECONDS):
            poll()

    thread = threading.Thread(target=follow, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()  # the last state, drawn once before the line is cleared
        bars[-1].refresh()
        bars[-1].close()


def _has_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0
