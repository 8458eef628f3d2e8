"""Failure paths: killed runs, damaged stores, concurrent runs. The store never half-changes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from profile_import.runners import runner_choice
from profile_import.stores import failpoints

from ..helpers import (
    CLI,
    LOCAL,
    PORTABLE,
    export,
    on_terminal,
    run_cli,
    run_killed_at,
    store_state,
    upsert,
    write_big_input,
    write_lines,
)
from ..object_servers import new_bucket

pytestmark = [pytest.mark.slow, pytest.mark.spec(section=4)]


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
    return any(store.glob("staging/*/shuffle/*.batches"))


# Both engines, mid-run: Beam's local runner (worker processes, the shuffle
# spilled to the work folder), and the in-process run of a small import.
ENGINES = {"local": LOCAL, "in_process": ("--runner=InProcess",)}


def start_mid_run(store: Path, path: Path, engine: str, *extra: str) -> subprocess.Popen[str]:
    """A run of `path`, once it is mid-way: for Beam, batches staged; in this
    process, its first bucket files written (the same moment, its apply step).
    `extra`: options for Beam's local runner."""
    seeded = set(store.glob("data/*"))
    process = start_run(store, path, *ENGINES[engine], *(extra if engine == "local" else ()))
    if engine == "local":
        wait_for(lambda: staged(store))
    else:
        wait_for(lambda: any(any(d.glob("bucket-*")) for d in set(store.glob("data/*")) - seeded))
    return process


@pytest.mark.parametrize("engine", ENGINES)
def test_a_killed_run_leaves_the_store_unchanged(
    tmp_path: Path, big_input: Path, engine: str
) -> None:
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, engine)
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


def test_a_launcher_killed_alone_takes_its_forked_workers_with_it(
    tmp_path: Path, big_input: Path
) -> None:
    """`kill -9 PID` of an in-process run, not of its process group: its
    forked workers (one per usable core) end with it (they ask Linux to), so
    none goes on staging buckets, and the next run finds the store as it was."""
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, "in_process")
    with open(f"/proc/{process.pid}/task/{process.pid}/children", encoding="ascii") as f:
        workers = [int(pid) for pid in f.read().split()]
    assert len(workers) == runner_choice.usable_cores()
    try:
        for pid in workers:  # held still: only their parent's end can end them
            os.kill(pid, signal.SIGSTOP)
        process.kill()
        process.wait()
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=10)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before


def test_a_launcher_killed_alone_takes_its_beam_workers_and_their_fork_server_with_it(
    tmp_path: Path, big_input: Path
) -> None:
    """`kill -9 PID` of a run on Beam's local runner: the fork server (forked
    from the launcher, which has Beam imported) dies with it, and the workers
    with the fork server; the store is as it was."""
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, "local", "--direct_num_workers=2")
    server = children(process.pid)
    workers = workers_of(process.pid, "local")
    assert len(server) == 1 and len(workers) == 2, (server, workers)
    assert command_line(server[0]) == command_line(process.pid)
    try:
        for pid in workers:  # held still: only their parent's end can end them
            os.kill(pid, signal.SIGSTOP)
        process.kill()
        process.wait()
        wait_for(lambda: gone(server + workers), timeout=10)
    finally:
        for pid in server + workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before


def test_a_killed_fork_server_fails_the_run_at_once_in_one_line(
    tmp_path: Path, big_input: Path
) -> None:
    """The process that forks Beam's local workers, killed: its workers die
    with it and the run fails within seconds, in one line that says so,
    publishing nothing."""
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, "local", "--direct_num_workers=2")
    (server,) = children(process.pid)
    workers = children(server)
    os.kill(server, signal.SIGKILL)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1, stderr
    line = one_error_line(stderr)
    assert f"the fork server {server} of the local runner was killed by SIGKILL" in line, line
    assert line.endswith("the store is unchanged")
    wait_for(lambda: gone(workers), timeout=10)
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_a_terminated_run_discards_its_work(tmp_path: Path, big_input: Path, engine: str) -> None:
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, engine)
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
    argv = [*CLI, "run", "--store", str(store), "--report", os.devnull, *LOCAL, str(big_input)]
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
    (shard,) = store.glob("data/*/bucket-*.kv")
    shard.unlink()  # damage: the version's bucket is gone
    report = tmp_path / "report.json"
    path = write_lines(tmp_path / "in.ndjson", [upsert({"email_hash": "seed"}, {"v": 2})])
    result = run_cli(
        "run", "--store", store, "--report", report, "--rejects", tmp_path / "r", path, beam=LOCAL
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
    first = start_mid_run(store, big_input, "local")
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
    argv = [
        *CLI,
        "run",
        "--store",
        str(tmp_path / "s"),
        "--report",
        os.devnull,
        "--rejects",
        str(tmp_path / "r"),
        *LOCAL,
        str(big_input),
    ]
    status, shown = on_terminal(argv)
    assert status == 0
    # A terminal that reports no size (this one) still gets the line; the
    # final state is drawn once before the line is cleared.
    # The inputs' bytes as listed (the launcher reads no content), lines beside them.
    size = f"{big_input.stat().st_size / 1e6:.1f}M"
    assert re.search(rf"read +\d+%\|.*\| [\d.]+[kM]?/{size}B \[\d\d:\d\d<", shown), shown
    assert re.search(r"\| 64/64 buckets \[\d\d:\d\d<00:00, +[\d.]+ buckets/s, 150,000 lines", shown)
    assert "B/s" in shown
    piped = run_cli("run", "--store", tmp_path / "s2", "--rejects", tmp_path / "r", big_input)
    assert "B/s" not in piped.stderr and "buckets" not in piped.stderr


# --- kills during the publish (stores/failpoints.py) -------------------------


def assert_no_leftovers(store: Path) -> None:
    current = int((store / "CURRENT").read_text())
    manifests = sorted(p.name for p in (store / "versions").iterdir())
    assert manifests == [f"{n:08d}.json" for n in range(1, current + 1)]
    referenced = {
        (s if isinstance(s, str) else s["path"]).split("/")[1]
        for name in manifests
        for s in json.loads((store / "versions" / name).read_text())["shards"]
        if s is not None
    }
    assert {p.name for p in (store / "data").iterdir()} == referenced
    assert list((store / "staging").iterdir()) == []
    assert not [p for p in store.rglob("*") if p.suffix in (".tmp", ".stats")]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("seeded")
    lines = [upsert({"email_hash": f"h{n}"}, {"n": n, "tags": ["s"]}) for n in range(200)]
    path = write_lines(folder / "seed.ndjson", lines)
    assert (
        run_cli("run", "--store", folder / "store", "--rejects", os.devnull, path).returncode == 0
    )
    return folder / "store"


def killed_input(folder: Path) -> Path:
    """Merges onto seeded profiles and creates new ones: a reapplied input would show."""
    merges = [
        upsert({"email_hash": f"h{n}"}, {"tags": ["k"]}, merge_objects=True)
        for n in range(0, 200, 3)
    ]
    creates = [upsert({"user_agent_id": f"u{n}"}, {"n": n}) for n in range(50)]
    return write_lines(folder / "killed.ndjson", [*merges, *creates])


def split_line_counts(path: Path, split_bytes: int) -> list[int]:
    """The lines of each byte range of `split_bytes` of `path`: those that start in it."""
    data = path.read_bytes()
    starts = [0, *(i + 1 for i, byte in enumerate(data) if byte == 0x0A and i + 1 < len(data))]
    counts = [0] * -(-len(data) // split_bytes)
    for start in starts:
        counts[start // split_bytes] += 1
    return counts


def sums_of_subsets(values: list[int]) -> set[int]:
    sums = {0}
    for value in values:
        sums |= {s + value for s in sums}
    return sums


def count_files_in(store: str) -> list[str]:
    """The split count files of the runs staged in `store` (a folder or an S3 URL)."""
    if not store.startswith("s3://"):
        return [str(p) for p in Path(store).glob("staging/*/counts/counts-*.json")]
    import boto3

    bucket, prefix = store.removeprefix("s3://").split("/", 1)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/staging/")
    return [o["Key"] for o in listed.get("Contents", []) if "/counts/counts-" in o["Key"]]


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_worker_killed_mid_run_reports_what_the_finished_splits_checked(
    tmp_path: Path, big_input: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """Beam's local runner gives no result for a pipeline that crashes: the
    FAILED report counts what each split that finished checked, as it wrote
    it to the run's work folder (in the store's bucket for an S3 store, as
    for workers elsewhere); never a split cut short, nor zero."""
    if where == "s3":
        request.getfixturevalue("s3_endpoint")
        store = f"s3://{new_bucket('s3')}/store"
    else:
        store = str(tmp_path / "store")
    split_bytes = 1 << 20
    report = tmp_path / "killed.json"
    argv = [*CLI, "run", "--quiet", "--store", store, "--report", str(report)]
    argv += [*LOCAL, "--direct_num_workers=2", f"--split-bytes={split_bytes}", str(big_input)]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(lambda: bool(count_files_in(store)), timeout=120)
        os.kill(workers_of(process.pid, "local")[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1, stderr
    assert "of the local runner was killed by SIGKILL" in one_error_line(stderr)
    failed = json.loads(report.read_text())
    assert failed["status"] == "FAILED" and failed["version"] is None
    counts = failed["counts"]
    per_split = split_line_counts(big_input, split_bytes)
    assert 0 < counts["lines"] <= sum(per_split)
    # Whole splits only: the lines of some of the splits, none of one cut short.
    assert counts["lines"] in sums_of_subsets(per_split)
    assert counts["lines"] == counts["blank"] + counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["upserts"] + counts["deletes"] == counts["lines"]
    assert counts["profiles_created"] == counts["profiles_updated"] == 0
    assert count_files_in(store) == []  # discarded with the run's work folder
    assert run_cli("export", "--store", store).stdout == ""  # nothing published


@pytest.mark.parametrize(
    ("point", "published"),
    [
        (failpoints.DATA_WRITTEN, False),
        (failpoints.BEFORE_POINTER, False),
        (failpoints.AFTER_POINTER, True),
    ],
)
def test_a_kill_during_the_publish_leaves_the_before_or_the_after_state(
    tmp_path: Path, seeded: Path, point: str, published: bool
) -> None:
    path = killed_input(tmp_path)
    after = tmp_path / "after"
    shutil.copytree(seeded, after)
    assert run_cli("run", "--store", after, "--rejects", os.devnull, path).returncode == 0
    store = tmp_path / "store"
    shutil.copytree(seeded, store)
    before_state, after_state = store_state(store), store_state(after)

    run_killed_at(point, store, path)
    # Killed where it was meant to be: its data written; its manifest too, past that point.
    assert len(list((store / "data").iterdir())) == 2
    assert (store / "versions" / "00000002.json").exists() == (point != failpoints.DATA_WRITTEN)
    assert (store / "CURRENT").read_text() == ("2\n" if published else "1\n")
    assert store_state(store) == (after_state if published else before_state)
    if not published:  # a manifest written but never published is not a version
        refused = run_cli("rollback", "--store", store, "--to", "2")
        assert refused.returncode == 1 and "has no version 2" in refused.stderr

    # The next run cleans what the dead one left and completes.
    late = write_lines(tmp_path / "late.ndjson", [upsert({"email_hash": "late"}, {"n": 1})])
    assert run_cli("run", "--store", store, "--rejects", os.devnull, late).returncode == 0
    assert_no_leftovers(store)
    # And the killed input, run again, is applied exactly once in all.
    again = run_cli("run", "--store", store, "--report", tmp_path / "r.json", path)
    assert again.returncode == 0, again.stderr
    status = json.loads((tmp_path / "r.json").read_text())["status"]
    assert status == ("ALREADY_APPLIED" if published else "SUCCEEDED")
    profiles, versions = store_state(store)
    assert versions == ["1", "2", "3"]  # seed, then the killed input and late in some order
    late_profile = {"email_hash": "late", "user_profile": {"n": 1}}
    assert sorted(map(json.dumps, profiles)) == sorted(
        map(json.dumps, [*after_state[0], late_profile])
    )
    assert_no_leftovers(store)


@pytest.mark.parametrize("point", [failpoints.BEFORE_POINTER, failpoints.AFTER_POINTER])
def test_a_first_run_killed_during_its_publish_leaves_no_store(tmp_path: Path, point: str) -> None:
    store = tmp_path / "store"
    first = write_lines(tmp_path / "first.ndjson", [upsert({"email_hash": "first"}, {})])
    run_killed_at(point, store, first)
    for command in ("export", "versions"):
        result = run_cli(command, "--store", store)
        assert result.returncode == 1 and f"no profile store at {store}" in result.stderr
    # The next run starts the store afresh, with its own bucket count.
    result = run_cli("run", "--store", store, "--buckets", "8", "--rejects", os.devnull, first)
    assert result.returncode == 0, result.stderr
    assert store_state(store) == ([{"email_hash": "first", "user_profile": {}}], ["1"])
    assert json.loads((store / "profile-store.json").read_text())["buckets"] == 8
    assert_no_leftovers(store)


@pytest.mark.parametrize("moment", ["reading", "applying"])
def test_a_killed_run_on_the_portable_runner_leaves_the_store_unchanged(
    tmp_path: Path, big_input: Path, moment: str
) -> None:
    store, current, before = seeded_store(tmp_path)
    process = start_run(store, big_input, *PORTABLE)
    work = store / "staging"
    if moment == "reading":
        wait_for(lambda: any(work.glob("*/rejects")))  # staged, the pipeline under way
        time.sleep(0.5)
    else:
        wait_for(lambda: any(store.glob("data/*/bucket-*")))  # buckets being written
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before
    # The next run, on the same runner, cleans up and applies the killed input in full.
    rerun = start_run(store, big_input, *PORTABLE)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert list((store / "staging").iterdir()) == []
    assert len(export(store)) > len(before)
    assert run_cli("verify", "--store", store).returncode == 0


# --- a worker that dies -----------------------------------------------------------


def children(pid: int) -> list[int]:
    """The child processes of `pid`, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


def workers_of(pid: int, engine: str) -> list[int]:
    """The worker processes of a run: the launcher's children in this process;
    on Beam's local runner, the children of its fork server, its only child."""
    if engine != "local":
        return children(pid)
    servers = children(pid)
    assert len(servers) == 1, servers
    return children(servers[0])


def gone(pids: list[int]) -> bool:
    """Whether none of `pids` runs any more (an unreaped zombie counts as gone)."""
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                return False
    return True


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("profile-import: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_killed_mid_run_fails_the_run_at_once_and_frees_the_store(
    tmp_path: Path, big_input: Path, engine: str
) -> None:
    """A worker that dies (`kill -9`, as the kernel kills one out of memory)
    fails the run within seconds, in one line that names it, releases the
    lock and publishes nothing: the next run is not blocked. On Beam's local
    runner it is a worker process; in this process, one of the forked workers."""
    store, current, before = seeded_store(tmp_path)
    process = start_mid_run(store, big_input, engine, "--direct_num_workers=2")
    workers = workers_of(process.pid, engine)
    assert len(workers) == 2, workers
    killed = workers[0]
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a hung run, not to outlive the test
    took = time.monotonic() - started
    assert process.returncode == 1, stderr
    assert took < 10, f"the run took {took:.1f} s to fail"
    line = one_error_line(stderr)
    if engine == "local":
        assert f"worker process {killed} of the local runner was killed by SIGKILL" in line
    else:
        assert re.search(r"worker [12] of 2 was killed by SIGKILL", line), line
    assert line.endswith("the store is unchanged")
    wait_for(lambda: gone(workers), timeout=10)  # none left behind, applying for no one
    assert (store / "CURRENT").read_bytes() == current
    assert export(store) == before
    after = write_lines(tmp_path / "after.ndjson", [upsert({"email_hash": "after"}, {})])
    result = run_cli("run", "--store", store, "--rejects", tmp_path / "r", after)
    assert result.returncode == 0, result.stderr
    assert len(export(store)) == 2
    assert_no_leftovers(store)


@pytest.mark.parametrize(
    ("point", "published"),
    [
        (failpoints.DATA_WRITTEN, False),
        (failpoints.BEFORE_POINTER, False),
        (failpoints.AFTER_POINTER, True),
    ],
)
def test_a_worker_killed_during_the_publish_fails_or_reports_the_publish(
    tmp_path: Path, seeded: Path, point: str, published: bool
) -> None:
    """On Beam's local runner the publish is the final step of the pipeline,
    in a worker process: killed there, the launcher does not wait for it. It
    fails the run (nothing published yet: the before-state), or reports the
    run as the version it published records it (the after-state); either
    way it releases the lock, and the next run completes."""
    path = killed_input(tmp_path)
    after = tmp_path / "after"
    shutil.copytree(seeded, after)
    assert run_cli("run", "--store", after, "--rejects", os.devnull, path).returncode == 0
    store = tmp_path / "store"
    shutil.copytree(seeded, store)
    before_state, after_state = store_state(store), store_state(after)

    report = tmp_path / "killed.json"
    argv = [*CLI, "run", "--quiet", "--store", str(store), "--report", str(report)]
    argv += ["--rejects", os.devnull, *LOCAL, "--direct_num_workers=2", str(path)]
    env = {**os.environ, failpoints.ENV: point}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    written = json.loads(report.read_text())
    if published:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert written["status"] == "SUCCEEDED" and written["version"] == 2
        assert written["counts"]["lines"] == 117
        assert "this report is rebuilt from version 2" in written["message"]
        assert "killed by SIGKILL" in written["message"]
    else:
        assert result.returncode == 1
        assert "of the local runner was killed by SIGKILL" in one_error_line(result.stderr)
        assert written["status"] == "FAILED" and written["version"] is None
    assert (store / "CURRENT").read_text() == ("2\n" if published else "1\n")
    assert store_state(store) == (after_state if published else before_state)

    late = write_lines(tmp_path / "late.ndjson", [upsert({"email_hash": "late"}, {"n": 1})])
    assert run_cli("run", "--store", store, "--rejects", os.devnull, late).returncode == 0
    assert_no_leftovers(store)
    again = run_cli("run", "--store", store, "--report", tmp_path / "r.json", path)
    assert again.returncode == 0, again.stderr
    status = json.loads((tmp_path / "r.json").read_text())["status"]
    assert status == ("ALREADY_APPLIED" if published else "SUCCEEDED")
    profiles, _ = store_state(store)
    late_profile = {"email_hash": "late", "user_profile": {"n": 1}}
    assert sorted(map(json.dumps, profiles)) == sorted(
        map(json.dumps, [*after_state[0], late_profile])
    )
