"""The progress line on a terminal, drawn from the workers' markers (a pseudo-terminal here)."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from profile_import.transforms.steps import progress

from ...helpers import on_terminal, write_big_input

# Markers as a run's workers write them: 90 bytes (and lines) at once, then
# 10 slowly (one every 0.2 s), then the buckets they feed applied one by one.
SCRIPT = """
import os, sys, time
from profile_import.runners import progress_display
from profile_import.transforms.steps import progress

progress_display.POLL_SECONDS = 0.1
folder = sys.argv[1]
with progress_display.shown(True, folder, 100, sys.stderr):
    progress.mark_members(folder, "buckets-0-1", [0, 1, 2, 3, 4, 5, 6, 7])
    progress.mark(folder, "read-0-1", 90)
    progress.mark(folder, "bytes-0-1", 90)
    time.sleep(0.3)
    for line in range(10):
        progress.mark(folder, f"read-0-{line + 2}", 1)
        progress.mark(folder, f"bytes-0-{line + 2}", 1)
        time.sleep(0.2)
    for bucket in range(8):
        progress.mark(folder, f"apply-{bucket}", 12)
        time.sleep(0.15)
"""
FRAME = re.compile(
    r"(read|apply) +(\d+)%\|[^|]*\| ([\d.]+)/([\d.]+)(B| buckets) "
    r"\[(\d\d:\d\d)<(\d\d:\d\d|\?), +([\d.]+k?|\?)\5/s(?:, ([\d,]+) lines(?: read)?)?\]"
)


def seconds(clock: str) -> int:
    minutes, secs = clock.split(":")
    return int(minutes) * 60 + int(secs)


def test_progress_shows_elapsed_rate_buckets_and_time_left(tmp_path: Path) -> None:
    status, drawn = on_terminal([sys.executable, "-c", SCRIPT, str(tmp_path)], columns=120, rows=40)
    assert status == 0
    frames = [m for m in FRAME.finditer(drawn)]
    reading = [m for m in frames if m[1] == "read"]
    applying = [m for m in frames if m[1] == "apply"]
    assert reading and applying, drawn

    # Reading: the inputs' bytes out of their listed total, with the time left
    # and the lines read so far.
    assert all(m[4] == "100" and m[9] for m in reading)
    assert any(m[7] != "?" for m in reading)
    # The rate is the current one: after the fast start, the slow lines show
    # a rate well under the average since the start (90+ lines / elapsed).
    slow = [m for m in reading if int(m[2]) >= 95 and m[8] != "?"]
    assert slow, drawn
    last = slow[-1]
    average = float(last[3]) / max(seconds(last[6]), 1)
    assert float(last[8]) < average / 2, (last[0], average)

    # Applying: buckets done out of those the lines feed, elapsed since the start.
    assert all(m[4] == "8" and m[9] == "100" for m in applying)
    done = [int(m[3]) for m in applying]
    assert done == sorted(done) and done[-1] == 8 and done[0] < 8
    assert seconds(applying[-1][6]) >= 2  # the pipeline's time, not the stage's (1.2 s)
    assert drawn.endswith("\r")  # the line is cleared when the pipeline ends


def test_progress_markers_hold_sets_of_any_size(tmp_path: Path) -> None:
    progress.mark_members(str(tmp_path), "buckets-0-1", [0, 5, 20_000])
    progress.mark_members(str(tmp_path), "buckets-1-1", [5, 6])
    progress.mark_members(str(tmp_path), "other-1", [7])
    assert progress.read_members(str(tmp_path), "buckets-") == 4
    progress.mark_members(None, "buckets-2-1", [1])  # not shown: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buckets-0-1", "buckets-1-1", "other-1"]


READ = re.compile(
    r"read +(\d+)%\|[^|]*\| ([\d.]+[kMG]?)/([\d.]+[kMG]?)B \[[^,\]]*, [^,\]]*, ([\d,]+) lines\]"
)
APPLY = re.compile(
    r"apply +(\d+)%\|[^|]*\| (\d+)/(\d+) buckets \[[^,\]]*, [^,\]]*, ([\d,]+) lines read\]"
)

# A run of the command as a user's on a terminal, with the display polling
# often and the check reporting every 500 lines, so that a run of a few
# seconds draws many frames.
RUN = """
import sys
from profile_import.runners import cli, progress_display
from profile_import.transforms.steps import check_lines

progress_display.POLL_SECONDS = 0.05
check_lines.PROGRESS_LINES = 500
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("compressed", [False, True])
def test_the_default_engine_draws_the_progress_line(tmp_path: Path, compressed: bool) -> None:
    """The default run (no Beam, forked workers for a plain input, this
    process for a compressed one) draws the same line as Beam's: bytes of
    the inputs read with the lines, then buckets applied; a compressed input
    counts its compressed bytes as it goes, not 0% until read whole."""
    big = write_big_input(tmp_path / "big.ndjson", 40_000)
    if compressed:
        big = tmp_path / "big.ndjson.gz"
        big.write_bytes(gzip.compress((tmp_path / "big.ndjson").read_bytes(), compresslevel=1))
    argv = [sys.executable, "-c", RUN, "run", "--store", str(tmp_path / "s"), str(big)]
    argv += ["--report", str(tmp_path / "r.json")]
    status, drawn = on_terminal(argv, columns=120, rows=40)
    assert status == 0, drawn
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["runner"] == "InProcess"
    reading = list(READ.finditer(drawn))
    applying = list(APPLY.finditer(drawn))
    assert reading and applying, drawn
    assert {m[3] for m in reading} == {_scaled(big.stat().st_size)}, drawn
    # Part-way through: some bytes and lines read, not all; never backwards.
    read = [(int(m[1]), _count(m[4])) for m in reading]
    assert any(0 < percent < 100 and 0 < lines < 40_000 for percent, lines in read), drawn
    assert read == sorted(read), drawn
    done = [int(m[2]) for m in applying]
    assert {m[4] for m in applying} == {"40,000"}
    assert done == sorted(done) and done[-1] == int(applying[-1][3]) > 1, drawn


def _scaled(size: int) -> str:
    """A byte count as tqdm draws it with `unit_scale` (3.24M)."""
    return tqdm.format_sizeof(size)


def _count(text: str) -> int:
    return int(text.replace(",", ""))
