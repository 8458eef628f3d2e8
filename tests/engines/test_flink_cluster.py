"""The import on a real Flink cluster (`tests/cluster.py`): one JobManager, two
TaskManagers, Beam's job server, SDK workers in their own environment with
the project installed from its wheel, and the store on a server reached over
TCP: S3 (moto), GCS (fake-gcs-server) and PostgreSQL.

The command line is the user's: a waiting `profile-import run` with local
inputs, `--report` and `--rejects` (the command stages the inputs where the
workers read them and brings the outputs back), `--runner=FlinkRunner` and
the cluster's addresses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ..cluster import BEAM_VERSION, FlinkCluster, cli_run, started_flink, wait_for
from ..helpers import delete, read_ndjson, run_cli, store_state, upsert, write_lines
from ..object_servers import S3_ENV, new_bucket
from ..spec.test_conformance import CASES, run_case
from .test_equals_sequential_fold import (
    DEFAULT_COMPARTMENT,
    applies,
    commands,
    exported,
    sequential_fold,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flink(
    tmp_path_factory: pytest.TempPathFactory,
    s3_endpoint: str,
    gcs_endpoint: str,
    postgres_tcp: str,
) -> Iterator[FlinkCluster]:
    host, port = postgres_tcp.rsplit(":", 1)
    env = {
        **S3_ENV,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "STORAGE_EMULATOR_HOST": gcs_endpoint,
        # The database over TCP, as workers on other hosts reach it.
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": "postgres",
    }
    yield from started_flink(tmp_path_factory.mktemp("flink"), env)


@pytest.fixture(autouse=True)
def no_job_left_running(flink: FlinkCluster) -> Iterator[None]:
    """A test that failed or timed out while its job ran leaves that job
    cancelled, so the next test finds the cluster's slots free."""
    yield
    flink.cancel_running()


# Each test's limit covers what a healthy run needs on a loaded machine, plus
# margin; the first also starts the cluster (the module's fixture).
@pytest.mark.timeout(480)
def test_the_workers_run_the_wheel_and_beam_of_the_job_server(flink: FlinkCluster) -> None:
    out = cli_run(flink, ["--version"])
    assert out.returncode == 0, out.stderr
    probe = subprocess.run(
        [
            str(flink.venv / "bin" / "python"),
            "-c",
            "import apache_beam, profile_import as p; print(apache_beam.__version__, p.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    version, location = probe.stdout.split()
    assert version == BEAM_VERSION
    assert "site-packages" in location  # installed from the wheel, not this source tree


# Every run on this cluster is a Flink job (runners/SCALING.md: what one
# costs), so the suite runs a few cases per store: the rejecting case on each
# store, and on PostgreSQL also the rerun case (its third run finds the import
# applied in the database's ledger). The other tests cover S3 further: the
# fold property (the merge rules, several files in order, rejects), spread
# work, and the faults with their reruns.
# PROFILE_IMPORT_CLUSTER_ALL_CASES=1 runs every case on every store.
CHOSEN = {
    "s3": ("envelope_errors",),
    "gs": ("envelope_errors",),
    "postgresql": ("envelope_errors", "rerun_is_idempotent"),
}
ALL_CASES = os.environ.get("PROFILE_IMPORT_CLUSTER_ALL_CASES") == "1"
STORE_CASES = [
    (p, kind) for kind, chosen in CHOSEN.items() for p in CASES if ALL_CASES or p.stem in chosen
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("case_path", "kind"), STORE_CASES, ids=[f"{p.stem}-{k}" for p, k in STORE_CASES]
)
def test_conformance_case_on_flink(
    flink: FlinkCluster, case_path: Path, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Local --report and --rejects (the waiting command brings them back);
    the inputs in the store's bucket; a PostgreSQL store's work in a bucket."""
    work = [f"--temp_location=s3://{new_bucket('s3')}/tmp"] if kind == "postgresql" else []
    run_case(
        case_path,
        kind,
        tmp_path,
        request,
        command=flink.cli,
        beam=[*flink.run_args(), *work],
        runner_name="FlinkRunner",
    )


@pytest.mark.timeout(300)
def test_flink_runner_starts_its_job_server_and_both_taskmanagers_work(
    flink: FlinkCluster, tmp_path: Path
) -> None:
    """`--flink_job_server_jar` with the launcher jar fetch.sh writes: Beam
    starts the job server itself for the run (no `--job_endpoint`), offline.
    The same job, from Flink's own metrics: each step that reads input ranges
    (numbering their lines, parsing and checking them) and the step that
    applies buckets ran as two subtasks, one on each TaskManager, each with
    records to process."""
    lines = [upsert({"email_hash": f"h{n}"}, {"n": n}) for n in range(600)]
    src = write_lines(tmp_path / "a.ndjson", [*lines, "{oops"])
    store = f"s3://{new_bucket('s3')}/spread"
    report, rejects = tmp_path / "report.json", tmp_path / "rejects.ndjson"
    args = ["run", "--store", store, "--report", report, "--rejects", rejects]
    args += ["--split-bytes", "4096", src]
    known = flink.job_ids()
    result = subprocess.run(
        [*flink.cli, *map(str, args), *flink.run_args(own_job_server=True)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=flink.launch_env(),
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(report.read_text())
    assert got["status"] == "SUCCEEDED_WITH_ERRORS" and got["runner"] == "FlinkRunner"
    assert got["counts"]["accepted"] == 600
    assert got["rejects_file"] == str(rejects)
    assert [(r["file"], r["line"]) for r in read_ndjson(rejects)] == [(str(src), 601)]
    (jid,) = flink.job_ids() - known
    for step in ("NumberSplits/CountNewlines", "{ParseCommands", "{ApplyCommands"):
        subtasks = flink.subtasks(jid, step)
        assert len({s["taskmanager-id"] for s in subtasks}) == 2, step
        assert all(s["metrics"]["read-records"] > 0 for s in subtasks), (step, subtasks)


@pytest.mark.timeout(420)
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
# Always: more files than lines (two empty inputs, of equal content) in splits
# smaller than a line; and one random draw.
@example(
    first=[],
    second=['{"operation":"DELETE","email_hash":"e1"}'],
    files=3,
    split_bytes=90,
)
@given(
    first=st.lists(commands(), max_size=30),
    second=st.lists(commands(), min_size=1, max_size=40),
    files=st.integers(1, 3),
    split_bytes=st.sampled_from([90, 400]),
)
def test_pipeline_on_flink_equals_sequential_fold(
    flink: FlinkCluster, first: list[str], second: list[str], files: int, split_bytes: int
) -> None:
    """Random commands, seeded by a local run, then imported on the cluster in
    1-3 files read in small splits (so both TaskManagers read) over 3
    buckets: the store exports exactly the sequential fold of both."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = f"s3://{new_bucket('s3')}/fold"
        seed = write_lines(folder / "seed.ndjson", first or [""])
        args = ["--default-compartment-id", DEFAULT_COMPARTMENT, "--rejects", os.devnull]
        seeded = run_cli("run", "--store", store, "--buckets", "3", *args, seed)
        assert seeded.returncode == 0, seeded.stderr
        size = -(-len(second) // files)
        paths = [
            write_lines(folder / f"second-{i}.ndjson", second[i * size : (i + 1) * size])
            for i in range(files)
        ]
        rejects = folder / "rejects.ndjson"
        run = cli_run(
            flink,
            [
                "run",
                "--store",
                store,
                *args[:2],
                "--rejects",
                rejects,
                "--report",
                "-",
                "--split-bytes",
                str(split_bytes),
                "--allow-reapply",
                *paths,
            ],
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["runner"] == "FlinkRunner"
        expected: dict[tuple[str, ...], Any] = {}
        sequential_fold(expected, first)
        sequential_fold(expected, second)
        assert exported(store) == expected
        # Every rejected line, and only those, named by its file and number.
        want = {
            (str(path), number)
            for i, path in enumerate(paths)
            for number, line in enumerate(second[i * size : (i + 1) * size], 1)
            if line.strip() and not applies(line)
        }
        assert {(r["file"], r["line"]) for r in read_ndjson(rejects)} == want


# --- faults -----------------------------------------------------------------
# Each kills one part of a run in the middle of its job. Whatever the cluster
# then does (retry the failed tasks and finish, or fail the job), and whenever
# the fault lands (before the final step publishes, or after), the store must
# be at its version before the run or at the run's complete version, never
# between; a command that reports success has published; and the rerun
# completes the import (ALREADY_APPLIED if the run had published). The rerun
# runs in this process (the store is what it reads; the next test's runs show
# the cluster healthy again).

SEED = 50
CHANGE_UPSERTS = range(0, 800, 2)  # 25 updates of seeded keys, 375 new ones
CHANGE_DELETES = range(1, SEED, 7)  # 7 deletions
# What a healthy faulted run needs here (its job, a retry after a fault), plus
# margin; past it the command gets SIGTERM, as from a scheduler's deadline.
FAULT_DEADLINE = 240


def _seeded_store(tmp_path: Path) -> tuple[str, Path, tuple[Any, Any]]:
    """A store in a bucket with SEED profiles (seeded by a local run), and the
    change a faulted run imports."""
    store = f"s3://{new_bucket('s3')}/faults"
    seed = write_lines(
        tmp_path / "seed.ndjson", [upsert({"email_hash": f"h{n}"}, {"n": n}) for n in range(SEED)]
    )
    assert run_cli("run", "--store", store, "--rejects", os.devnull, seed).returncode == 0
    lines = [upsert({"email_hash": f"h{n}"}, {"m": n}) for n in CHANGE_UPSERTS]
    lines += [delete({"email_hash": f"h{n}"}) for n in CHANGE_DELETES]
    return store, write_lines(tmp_path / "change.ndjson", lines), store_state(store)


def _launch(flink: FlinkCluster, store: str, change: Path, tmp_path: Path) -> subprocess.Popen[str]:
    argv = [*flink.cli, "run", "--store", store, "--rejects", str(tmp_path / "rejects.ndjson")]
    argv += ["--report", str(tmp_path / "report.json"), str(change), *flink.run_args()]
    return subprocess.Popen(
        argv,
        env=flink.launch_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(run: subprocess.Popen[str], tmp_path: Path, deadline: float = FAULT_DEADLINE) -> bool:
    """Waits for the faulted command (SIGTERM at `deadline`); whether it
    reported success. A failure ends in the command's one-line message."""
    try:
        _, stderr = run.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    if run.returncode == 0:
        assert json.loads((tmp_path / "report.json").read_text())["status"] == "SUCCEEDED"
        return True
    assert run.returncode in (1, 130), stderr
    assert "Traceback" not in stderr, stderr
    # Its last word: `profile-import: error: ...` or `profile-import: interrupted ...`.
    assert stderr.strip().splitlines()[-1].startswith("profile-import: "), stderr
    return False


def _check_before_or_after(store: str, change: Path, before: Any, succeeded: bool) -> bool:
    """The store at its before- or after-state (a command that succeeded:
    after), then a rerun that completes; whether the faulted run published."""
    after_fault = store_state(store)
    published = after_fault[1] == ["1", "2"]
    if not published:
        assert after_fault == before
    assert published or not succeeded
    rerun = run_cli("run", "--store", store, "--rejects", os.devnull, "--report", "-", change)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["status"] == ("ALREADY_APPLIED" if published else "SUCCEEDED")
    profiles, versions = store_state(store)
    assert versions == ["1", "2"]
    new = sum(1 for n in CHANGE_UPSERTS if n >= SEED)
    assert len(profiles) == SEED + new - len(CHANGE_DELETES)
    return published


@pytest.mark.timeout(480)
def test_a_taskmanager_killed_mid_run(flink: FlinkCluster, tmp_path: Path) -> None:
    """TaskManager 0 killed once its job has started parsing, and started
    again: Flink retries the failed tasks (on either TaskManager)."""
    store, change, before = _seeded_store(tmp_path)
    known = flink.job_ids()
    run = _launch(flink, store, change, tmp_path)
    try:
        flink.wait_step_started("ParseCommands", known)
        flink.taskmanagers[0].kill()
        time.sleep(5)
        flink.start_taskmanager(0)
        succeeded = _finish(run, tmp_path)
    finally:
        run.kill()
        flink.healthy()
    _check_before_or_after(store, change, before, succeeded)


@pytest.mark.timeout(480)
def test_a_worker_pool_killed_mid_run(flink: FlinkCluster, tmp_path: Path) -> None:
    """TaskManager 0's worker pool, and the SDK workers it started, killed
    while a step runs, then started again. Beam's TaskManager does not notice
    a dead SDK worker (nor one that died before it connected): its retried
    tasks may fail on the same dead worker until the job fails, or wait for
    it until the deadline, whose SIGTERM to the command cancels the job."""
    store, change, before = _seeded_store(tmp_path)
    known = flink.job_ids()
    run = _launch(flink, store, change, tmp_path)
    try:
        flink.wait_step_started("ParseCommands", known)
        flink.pools[0].kill()  # its process group: the pool and its SDK workers
        time.sleep(5)
        flink.start_pool(0)
        succeeded = _finish(run, tmp_path)
    finally:
        run.kill()
        flink.healthy()
    _check_before_or_after(store, change, before, succeeded)


@pytest.mark.timeout(480)
def test_the_launching_command_killed_mid_run(flink: FlinkCluster, tmp_path: Path) -> None:
    """SIGTERM (what a scheduler sends): the command cancels its job and exits
    130, unless the job had already finished (it then reports as usual)."""
    store, change, before = _seeded_store(tmp_path)
    known = flink.job_ids()
    run = _launch(flink, store, change, tmp_path)
    try:
        jid = flink.wait_step_started("ParseCommands", known)
        run.send_signal(signal.SIGTERM)
        succeeded = _finish(run, tmp_path)
        if not succeeded:
            assert run.returncode == 130
            ended = ("CANCELED", "FINISHED", "FAILED")
            wait_for("the job ended", lambda: flink.job_state(jid) in ended, 120)
    finally:
        run.kill()
        flink.healthy()
    _check_before_or_after(store, change, before, succeeded)


@pytest.mark.timeout(60)
def test_no_part_of_the_cluster_ran_out_of_memory(flink: FlinkCluster) -> None:
    """Last, after every job above. With Beam's runner loaded by each job's
    own class loader, the TaskManagers' heap filled up job after job until one
    died (`OutOfMemoryError: Java heap space`) some twenty jobs in."""
    logs = sorted((flink.folder / "flink-logs").glob("*.log"))
    assert logs
    for log in logs:
        assert "OutOfMemoryError" not in log.read_text(errors="replace"), log
