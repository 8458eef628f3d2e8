"""Failure paths: killed runs, damaged stores, concurrent runs. The store never half-changes."""

from __future__ import annotations

import json
import os
import pty
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
    assert process.returncode != 0
    assert "interrupted; the store is unchanged" in stderr and "Traceback" not in stderr
    assert (store / "CURRENT").read_bytes() == current and export(store) == before
    assert list((store / "staging").iterdir()) == []
    assert len(list((store / "data").iterdir())) == 1
    os.killpg(process.pid, signal.SIGKILL) if _alive(process.pid) else None


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
    assert "lines/s" in shown and "/150,000 lines" in shown
    piped = run_cli("run", "--store", tmp_path / "s2", "--rejects", tmp_path / "r", big_input)
    assert "lines/s" not in piped.stderr
