"""A run's outputs survive retries and kills (SPEC §4): the report, the rejects
are written whole or not at all, a run that applies nothing leaves the
rejects as they are, a killed run leaves no report of a run under way, and a
run's scratch folders leave $TMPDIR with it, or with the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from profile_import.stores import failpoints, locking
from profile_import.transforms.steps import outputs, scratch

from ..helpers import CLI, export, run_cli, upsert, write_big_input, write_lines
from ..object_servers import get, new_bucket, put

pytestmark = pytest.mark.spec(section=4)

BAD = "{not json"


def day_input(folder: Path, name: str, users: range) -> Path:
    lines: list[str | dict[str, Any]] = [upsert({"email_hash": f"h{n}"}, {"n": n}) for n in users]
    return write_lines(folder / name, [*lines, BAD])


def run_to(
    store: Path, report: str | Path, rejects: str | Path, path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, "run", "--quiet", "--store", str(store)]
    argv += ["--report", str(report), "--rejects", str(rejects), str(path)]
    return subprocess.run(
        argv,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# --- an Airflow-style retry: the same command, the same output paths --------


def test_a_retry_leaves_the_rejects_and_reports_who_applied_the_input(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "2026-11-23"
    out.mkdir()
    report, rejects = out / "report.json", out / "rejects.ndjson"
    src = day_input(tmp_path, "day.ndjson", range(5))
    first = run_to(store, report, rejects, src)
    assert first.returncode == 0, first.stderr
    first_report, first_rejects = report.read_bytes(), rejects.read_bytes()
    applied = json.loads(first_report)
    assert applied["status"] == "SUCCEEDED_WITH_ERRORS" and len(first_rejects.splitlines()) == 1

    retry = run_to(store, report, rejects, src)
    assert retry.returncode == 0, retry.stderr
    assert rejects.read_bytes() == first_rejects  # SPEC §4: left as it is
    # --report holds the retry's own report, whole: what it did (nothing) and
    # which execution applied each input.
    again = json.loads(report.read_bytes())
    assert again["status"] == "ALREADY_APPLIED"
    assert again["execution_id"] != applied["execution_id"]
    [entry] = again["inputs"]
    assert entry["applied_by"]["execution_id"] == applied["execution_id"]
    assert entry["applied_by"]["version"] == applied["version"] == 1
    assert [a["execution_id"] for a in again["already_applied"]] == [applied["execution_id"]]
    assert sorted(p.name for p in out.iterdir()) == ["rejects.ndjson", "report.json"]


@pytest.mark.slow
def test_a_retry_leaves_the_rejects_object_as_it_is(tmp_path: Path, object_scheme: str) -> None:
    bucket = new_bucket(object_scheme)
    report = f"{object_scheme}://{bucket}/2026-11-23/report.json"
    rejects = f"{object_scheme}://{bucket}/2026-11-23/rejects.ndjson"
    src = day_input(tmp_path, "day.ndjson", range(3))
    store = tmp_path / "store"
    first = run_to(store, report, rejects, src)
    assert first.returncode == 0, first.stderr
    applied, first_rejects = json.loads(get(report)), get(rejects)
    assert applied["counts"]["rejected"] == 1 == len(first_rejects.splitlines())

    retry = run_to(store, report, rejects, src)
    assert retry.returncode == 0, retry.stderr
    assert get(rejects) == first_rejects
    again = json.loads(get(report))
    assert again["status"] == "ALREADY_APPLIED"
    assert again["inputs"][0]["applied_by"]["execution_id"] == applied["execution_id"]


def test_an_output_in_a_missing_bucket_is_refused_before_the_run(
    tmp_path: Path, object_scheme: str
) -> None:
    src = day_input(tmp_path, "day.ndjson", range(1))
    missing = f"{object_scheme}://no-such-bucket-{os.getpid()}/r.json"
    result = run_to(tmp_path / "store", missing, os.devnull, src)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"profile-import: error: --report {missing}: "), line
    assert not (tmp_path / "store").exists()


# --- kills: the previous report and rejects, or nothing ---------------------


KILL_POINTS = [
    failpoints.OUTPUT_WRITTEN,  # the rejects in full, under their temporary name
    failpoints.DATA_WRITTEN,
    failpoints.BEFORE_POINTER,
    failpoints.AFTER_POINTER,  # published, the report not yet written
]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_run_leaves_the_previous_outputs(tmp_path: Path, point: str) -> None:
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    report, rejects = out / "report.json", out / "rejects.ndjson"
    assert (
        run_to(store, report, rejects, day_input(tmp_path, "d1.ndjson", range(3))).returncode == 0
    )
    before = report.read_bytes(), rejects.read_bytes()

    second = day_input(tmp_path, "d2.ndjson", range(10, 14))
    killed = run_to(store, report, rejects, second, **{failpoints.ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert report.read_bytes() == before[0]
    # The rejects are gathered before the publish: killed before, the
    # previous ones; after, the killed run's, whole.
    if point == failpoints.OUTPUT_WRITTEN:
        assert rejects.read_bytes() == before[1]
    else:
        [reject] = [json.loads(line) for line in rejects.read_bytes().splitlines()]
        assert reject["file"] == str(second) and reject["line"] == 5
    leftovers = sorted(p.name for p in out.iterdir())
    if point == failpoints.OUTPUT_WRITTEN:  # the dead run's temporary file
        assert len(leftovers) == 3 and leftovers[0].startswith(".rejects.ndjson.")

    rerun = run_to(store, report, rejects, second)
    assert rerun.returncode == 0, rerun.stderr
    published = point == failpoints.AFTER_POINTER
    status = json.loads(report.read_bytes())["status"]
    assert status == ("ALREADY_APPLIED" if published else "SUCCEEDED_WITH_ERRORS")
    # The second input's rejects: the rerun's own, or, if it found the input
    # applied, those of the killed run that applied it, left as they were.
    [reject] = [json.loads(line) for line in rejects.read_bytes().splitlines()]
    assert reject["file"] == str(second) and reject["line"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["rejects.ndjson", "report.json"]


def test_a_first_run_killed_leaves_no_report(tmp_path: Path) -> None:
    report, rejects = tmp_path / "report.json", tmp_path / "rejects.ndjson"
    src = day_input(tmp_path, "d.ndjson", range(3))
    killed = run_to(
        tmp_path / "store", report, rejects, src, **{failpoints.ENV: failpoints.AFTER_POINTER}
    )
    assert killed.returncode == -signal.SIGKILL
    assert not report.exists()  # never a report of a run under way
    assert rejects.exists()  # written before the publish, whole


@pytest.mark.parametrize("point", [failpoints.OUTPUT_WRITTEN, failpoints.AFTER_POINTER])
def test_a_killed_run_leaves_the_previous_objects(
    tmp_path: Path, object_scheme: str, point: str
) -> None:
    bucket = new_bucket(object_scheme)
    report, rejects = f"{object_scheme}://{bucket}/report.json", f"{object_scheme}://{bucket}/r"
    put(report, b"an earlier report\n")
    put(rejects, b"earlier rejects\n")
    src = day_input(tmp_path, "d.ndjson", range(3))
    killed = run_to(tmp_path / "store", report, rejects, src, **{failpoints.ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert get(report) == b"an earlier report\n"
    # Killed while uploading the rejects: the upload never completed.
    expected = b"earlier rejects\n" if point == failpoints.OUTPUT_WRITTEN else None
    if expected is not None:
        assert get(rejects) == expected
    else:
        assert len(get(rejects).splitlines()) == 1  # written whole before the publish


def test_an_interrupted_run_reports_it(tmp_path: Path) -> None:
    """SIGTERM (what Airflow sends on a timeout) while the run waits: a FAILED
    report that says so, never one of a run under way."""
    store = tmp_path / "store"
    seed = day_input(tmp_path, "seed.ndjson", range(1))
    assert run_cli("run", "--store", store, "--report", os.devnull, seed).returncode == 0
    report = tmp_path / "report.json"
    src = day_input(tmp_path, "d.ndjson", range(3))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    argv = [*CLI, "run", "--store", str(store), "--report", str(report), "--lock-timeout", "60"]
    with src.open("rb") as stdin, locking.exclusive(str(store / ".lock"), 0, "store"):
        process = subprocess.Popen(
            [*argv, "-"],  # standard input, spooled to the run's scratch
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmpdir)},
        )
        assert process.stderr is not None
        for line in process.stderr:
            if "waiting for the store lock: started" in line:
                break
        assert not report.exists()
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 130
    assert rest.splitlines()[-1] == "profile-import: interrupted (SIGTERM); the store is unchanged"
    interrupted = json.loads(report.read_text())
    assert interrupted["status"] == "FAILED"
    assert interrupted["failure"] == "interrupted (SIGTERM)"
    assert list(tmpdir.iterdir()) == []  # its scratch went with it


# --- the output layer itself --------------------------------------------------


def test_checking_an_output_leaves_it_and_removes_only_dead_temporary_files(
    tmp_path: Path,
) -> None:
    target = tmp_path / "report.json"
    target.write_bytes(b"before\n")
    dead = tmp_path / ".report.json.0123456789ab.tmp"
    dead.write_bytes(b"half a rep")
    # A live writer's: locked by another process, which the check must not take.
    live = tmp_path / ".report.json.ba9876543210.tmp"
    live.write_bytes(b"")
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
            "print(1, flush=True); time.sleep(60)",
            str(live),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"1\n"
        outputs.Output("--report", str(target)).check()
        assert target.read_bytes() == b"before\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "report.json"]
    finally:
        holder.kill()
        holder.wait()


def test_an_output_that_fails_while_written_keeps_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "rejects.ndjson"
    target.write_bytes(b"before\n")
    output = outputs.Output("--rejects", str(target))
    with pytest.raises(RuntimeError), output.open() as out:
        out.write(b"half of it")
        raise RuntimeError("the disk is full")
    assert target.read_bytes() == b"before\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.ndjson"]
    output.write(b"after\n")
    assert target.read_bytes() == b"after\n"


def test_an_object_that_fails_while_written_keeps_what_was_there(object_scheme: str) -> None:
    url = f"{object_scheme}://{new_bucket(object_scheme)}/rejects.ndjson"
    put(url, b"before\n")
    output = outputs.Output("--rejects", url)
    output.check()
    with pytest.raises(RuntimeError), output.open() as out:
        out.write(b"half of it")
        raise RuntimeError("the connection dropped")
    assert get(url) == b"before\n"


# --- scratch in $TMPDIR --------------------------------------------------------


@pytest.mark.slow
def test_a_killed_runs_scratch_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """Killed while its workers hand their lines over, a run leaves its scratch
    folders; the next run removes them, never a live run's."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    big = write_big_input(tmp_path / "big.ndjson", 40_000)  # over 1 MiB: forked workers
    argv = [*CLI, "run", "--quiet", "--store", str(tmp_path / "store")]
    argv += ["--report", os.devnull, "--rejects", os.devnull, str(big)]
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmpdir.glob("profile-import-workers-*/*-to-*.batches")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in tmpdir.iterdir())
    assert len(left) == 2 and all(name.startswith("profile-import-") for name in left)

    with scratch.folder(root=str(tmpdir)) as live:  # a run under way at the same time
        small = day_input(tmp_path, "small.ndjson", range(2))
        result = subprocess.run(
            [*CLI, "run", "--quiet", "--store", str(tmp_path / "s2"), str(small)],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert [str(p) for p in tmpdir.iterdir()] == [live]
    assert list(tmpdir.iterdir()) == []


# --- a FAILED report keeps the counts ------------------------------------------


# Runs argv[2:] with writes past argv[1] bytes failing (EFBIG; Python ignores
# SIGXFSZ): as on a full disk, the store's files cannot be written. Set in a
# Python of its own, not by forking this one (`preexec_fn`): this process may
# have run Beam, and gRPC's fork handlers can abort the child before it execs.
WITH_FILE_LIMIT = (
    "import os, resource, sys; limit = int(sys.argv[1]);"
    " resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit));"
    " os.execv(sys.argv[2], sys.argv[2:])"
)


# Beam's local runner: small splits spilled whole, then the bucket, bigger
# than the limit, cannot be written: every split was read and checked first.
BEAM_SMALL_SPLITS = ("--runner=FnApiRunner", "--direct_num_workers=2", "--split-bytes=262144")


@pytest.mark.parametrize(
    ("lines", "limit", "engine"),
    [
        pytest.param(3_000, 64 << 10, (), id="in-process"),
        pytest.param(40_000, 256 << 10, (), id="forked-workers"),
        pytest.param(20_000, 512 << 10, BEAM_SMALL_SPLITS, marks=pytest.mark.slow, id="beam"),
    ],
)
def test_a_run_that_cannot_write_reports_what_it_read(
    tmp_path: Path, lines: int, limit: int, engine: tuple[str, ...]
) -> None:
    """In this process, in forked workers (over 1 MiB), and on Beam's local
    runner, whose failed pipeline leaves no result: each split's counts were
    written to the run's work folder as it was checked."""
    store = tmp_path / "store"
    src = write_big_input(tmp_path / "in.ndjson", lines)
    with src.open("a") as f:
        f.write(BAD + "\n\n")
    report = tmp_path / "report.json"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    argv = [*CLI, "run", "--quiet", "--store", str(store), "--buckets", "1", *engine]
    argv += ["--report", str(report), "--rejects", str(tmp_path / "r.ndjson"), str(src)]
    result = subprocess.run(
        [sys.executable, "-c", WITH_FILE_LIMIT, str(limit), *argv],
        env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    failed = json.loads(report.read_text())
    assert failed["status"] == "FAILED"
    assert "File too large" in failed["failure"]
    counts = failed["counts"]
    assert (counts["lines"], counts["rejected"], counts["blank"]) == (lines + 2, 1, 1)
    assert counts["accepted"] == lines == counts["upserts"] + counts["deletes"]
    assert counts["profiles_created"] == 0
    assert failed["rejects_by_code"] == {"INVALID_JSON": 1}
    if not engine:  # Beam's pipeline hashed the input, but its result never came
        assert failed["inputs"][0]["lines"] == lines + 2
    assert not (store / "CURRENT").exists() or export(store) == []
    assert list(tmpdir.iterdir()) == []  # its scratch, hand-over files included
