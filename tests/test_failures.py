"""Failure paths: killed runs, damaged stores, concurrent runs. The store never half-changes."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import CLI, export, run_cli, upsert, write_big_input, write_lines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_big_input(tmp_path_factory.mktemp("big") / "big.ndjson", 150_000)


def seeded_store(tmp_path: Path) -> tuple[Path, bytes, list[dict[str, object]]]:
    store = tmp_path / "store"
    seed = write_lines(tmp_path / "seed.ndjson", [upsert({"email_hash": "seed"}, {"v": 1})])
    assert run_cli("run", "--store", store, "--rejects", tmp_path / "r", seed).returncode == 0
    return store, (store / "CURRENT").read_bytes(), export(store)


def start_run(store: Path, path: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [
        *CLI,
        "run",
        "--quiet",
        "--store",
        str(store),
        "--report",
        os.devnull,
        *extra,
        str(path),
    ]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def staged(store: Path) -> bool:
    """A run is mid-pipeline: its batches have been spilled to its work folder."""
    return any(store.glob("staging/*/shuffle/*.batch"))


def test_a_killed_run_leaves_the_store_unchanged(tmp_path: Path, big_input: Path) -> None:
    store, current, before = seeded_store(tmp_path)
    process = start_run(store, big_input)
    wait_for(lambda: staged(store))
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its worker processes
    process.wait()
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before
    # The lock died with the run; the next run cleans up what it left.
    after = write_lines(tmp_path / "after.ndjson", [upsert({"email_hash": "after"}, {})])
    assert run_cli("run", "--store", store, "--rejects", tmp_path / "r", after).returncode == 0
    assert len(export(store)) == 2
    assert list((store / "staging").iterdir()) == []
    assert len(list((store / "data").iterdir())) == 2


def test_a_terminated_run_discards_its_work(tmp_path: Path, big_input: Path) -> None:
    store, current, before = seeded_store(tmp_path)
    process = start_run(store, big_input)
    wait_for(lambda: staged(store))
    process.send_signal(signal.SIGTERM)  # what cron, Airflow and `kill` send
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr == "profile-import: interrupted (SIGTERM); the store is unchanged\n"
    assert (store / "CURRENT").read_bytes() == current and export(store) == before
    assert list((store / "staging").iterdir()) == []
    assert len(list((store / "data").iterdir())) == 1
    os.killpg(process.pid, signal.SIGKILL) if _alive(process.pid) else None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_interrupted_as_its_workers_start_exits_130(
    tmp_path: Path, big_input: Path, signum: signal.Signals
) -> None:
    """Beam waits for its worker processes when a run unwinds; they must not hang it."""
    store, current, before = seeded_store(tmp_path)
    argv = [*CLI, "run", "--store", str(store), "--report", os.devnull, str(big_input)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "INFO profile_import: pipeline: started" in line:
            break
    time.sleep(0.3)  # the worker processes are starting
    process.send_signal(signum)  # to the launcher only, as `kill PID` does
    try:
        _, rest = process.communicate(timeout=60)  # before the fix: hung for ever
        status = process.returncode
        wait_for(lambda: not _running_in_group(process.pid), timeout=10)  # no worker left
    finally:
        os.killpg(process.pid, signal.SIGKILL) if _alive(process.pid) else None
    assert status == 130
    name = signal.Signals(signum).name
    assert rest.splitlines()[-1] == f"profile-import: interrupted ({name}); the store is unchanged"
    assert "Traceback" not in rest and "Exception" not in rest
    assert (store / "CURRENT").read_bytes() == current and export(store) == before
    assert list((store / "staging").iterdir()) == []


def _running_in_group(pgid: int) -> list[int]:
    """The processes of a group that still run (not zombies waiting to be reaped)."""
    running = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            running.append(int(entry))
    return running


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_run_that_fails_midway_leaves_the_store_unchanged(tmp_path: Path) -> None:
    store, current, before = seeded_store(tmp_path)
    (shard,) = store.glob("data/*/bucket-*.ndjson")
    shard.unlink()  # damage: the version's bucket is gone
    report = tmp_path / "report.json"
    path = write_lines(tmp_path / "in.ndjson", [upsert({"email_hash": "seed"}, {"v": 2})])
    result = run_cli(
        "run", "--store", store, "--report", report, "--rejects", tmp_path / "r", path, beam=()
    )  # with worker processes, whose tracebacks must not reach the user's stderr
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rep = json.loads(report.read_text())
    assert rep["status"] == "FAILED" and "is damaged" in rep["message"]
    assert (store / "CURRENT").read_bytes() == current
    assert [p.name for p in (store / "versions").iterdir()] == ["00000001.json"]
    assert list((store / "staging").iterdir()) == []
    assert before  # what was there is still described by the unchanged version


def test_concurrent_runs_never_lose_an_update(tmp_path: Path, big_input: Path) -> None:
    store, _, _ = seeded_store(tmp_path)
    first = start_run(store, big_input)
    wait_for(lambda: staged(store))
    second = write_lines(tmp_path / "second.ndjson", [upsert({"email_hash": "second"}, {"n": 2})])
    refused = run_cli("run", "--store", store, "--rejects", tmp_path / "r", second)
    assert refused.returncode == 1
    assert "is in use by another run (pid" in refused.stderr
    assert "--lock-timeout" in refused.stderr
    waited = run_cli(
        "run", "--store", store, "--rejects", tmp_path / "r", "--lock-timeout", "300", second
    )
    assert waited.returncode == 0, waited.stderr
    assert first.wait(timeout=300) == 0
    emails = {p.get("email_hash") for p in export(store)}
    assert {"seed", "second"} <= emails and len(emails) > 100  # the big run's profiles too
    assert [p.name for p in sorted((store / "versions").iterdir())] == [
        "00000001.json",
        "00000002.json",
        "00000003.json",
    ]


def test_progress_is_shown_on_a_terminal_only(tmp_path: Path, big_input: Path) -> None:
    primary, secondary = pty.openpty()
    argv = [
        *CLI,
        "run",
        "--store",
        str(tmp_path / "s"),
        "--report",
        os.devnull,
        "--rejects",
        str(tmp_path / "r"),
        str(big_input),
    ]
    process = subprocess.Popen(argv, stderr=secondary, stdout=subprocess.DEVNULL)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=300) == 0
    shown = b"".join(chunks).decode()
    # A terminal that reports no size (this one) still gets the line; the
    # final state is drawn once before the line is cleared.
    assert re.search(r"read +\d+%\|.*\| [\d.]+k?/150k lines \[\d\d:\d\d<", shown), shown
    assert re.search(r"\| 64/64 buckets \[\d\d:\d\d<00:00, +[\d.]+ buckets/s, 150,000 lines", shown)
    assert "lines/s" in shown
    piped = run_cli("run", "--store", tmp_path / "s2", "--rejects", tmp_path / "r", big_input)
    assert "lines/s" not in piped.stderr and "buckets" not in piped.stderr
