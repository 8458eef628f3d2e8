"""Small imports run in this process, without Beam (`pipelines.in_process`).

The rule that picks the engine (`runners.runner_choice`), that the default
run of a small import never imports Beam, and that it gives the same store,
rejects and counts as the Beam pipeline on the same inputs.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from profile_import.inputs.plan import InputFile
from profile_import.pipelines import forked_workers, local_steps
from profile_import.runners import runner_choice
from profile_import.runners.execution import Execution, RunSettings
from profile_import.stores import StoreError
from profile_import.transforms.steps import batches
from profile_import.transforms.steps.apply_bucket import apply_lines
from profile_import.transforms.steps.check_lines import BucketLines

from ..helpers import CLI, ONE_WORKER, delete, export, run_cli, upsert, write_big_input, write_lines

pytestmark = pytest.mark.spec(section=2)

ALICE = {"compartment_id": "1000", "user_account_id": "alice"}
BOB = {"email_hash": "5d41402abc4b2a76b9719d911017c592"}
MIB = 1 << 20


@pytest.mark.parametrize(
    ("beam_args", "expected"),
    [
        ([], None),
        (["--runner=InProcess"], True),
        (["--runner=in-process"], True),
        (["--runner=inprocess", "--direct_num_workers=2"], True),
        (["--runner=FnApiRunner"], False),
        (["--direct_num_workers=1"], False),
        (["--runner=PortableRunner", "--job_endpoint=embed"], False),
    ],
)
def test_what_a_run_asks_for(beam_args: list[str], expected: bool | None) -> None:
    assert runner_choice.requested(beam_args) is expected


def _input(
    size: int | None, compression: str | None = None, index: int = 0, where: str = ""
) -> InputFile:
    return InputFile(index, f"{where}in-{index}.ndjson", size, compression)


PLENTY = 64 << 30  # bytes of memory free


@pytest.mark.parametrize(
    ("inputs", "available", "small"),
    [
        ([_input(0)], 0, True),
        # Up to 48 MiB: without Beam whatever the memory.
        ([_input(48 * MIB)], 0, True),
        ([_input(24 * MIB), _input(24 * MIB, index=1)], 0, True),
        ([_input(48 * MIB + 1)], 0, False),
        # Beyond, local uncompressed files whose run fits in half the free memory.
        ([_input(48 * MIB + 1)], PLENTY, True),
        ([_input(100 * MIB)], 2 * 6 * 100 * MIB, True),
        ([_input(100 * MIB)], 2 * 6 * 100 * MIB - 1, False),
        ([_input(512 * MIB)], PLENTY, True),
        ([_input(256 * MIB), _input(256 * MIB + 1, index=1)], PLENTY, False),
        # Compressed: counted as 8 times its size, NDJSON compresses ~5-10x;
        # beyond 48 MiB it cannot be cut in parts: Beam.
        ([_input(6 * MIB, "gzip")], 0, True),
        ([_input(6 * MIB + 1, "gzip")], PLENTY, False),
        ([_input(100 * MIB), _input(MIB, "gzip", index=1)], PLENTY, False),
        # In a bucket, beyond 48 MiB: Beam, which reads ranges of it in parallel.
        ([_input(10 * MIB, where="s3://b/")], 0, True),
        ([_input(100 * MIB, where="gs://b/")], PLENTY, False),
        # A size nobody knows (an unsized URL): Beam.
        ([_input(None)], PLENTY, False),
        ([_input(10), _input(None, index=1)], PLENTY, False),
    ],
)
def test_which_inputs_are_imported_without_beam(
    inputs: list[InputFile], available: int, small: bool
) -> None:
    assert runner_choice.small(inputs, available) is small


def test_the_memory_free_is_the_systems() -> None:
    free = runner_choice.available_memory()
    assert free is not None and 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_small_import_runs_in_this_process_without_importing_beam(tmp_path: Path) -> None:
    commands = write_lines(
        tmp_path / "in.ndjson",
        [upsert(ALICE, {"a": 1}), "{broken", "", upsert(BOB, {"b": 1}), delete(BOB)],
    )
    script = (
        "import sys\n"
        "from profile_import.runners import cli\n"
        "code = cli.main(sys.argv[1:])\n"
        "assert 'apache_beam' not in sys.modules, 'Beam was imported'\n"
        "sys.exit(code)\n"
    )
    argv = [sys.executable, "-c", script, "run", "--quiet", "--store", str(tmp_path / "s")]
    argv += ["--rejects", str(tmp_path / "r.ndjson"), "--report", str(tmp_path / "p.json")]
    result = subprocess.run([*argv, str(commands)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert (report["runner"], report["workers"], report["status"]) == (
        "InProcess",
        1,
        "SUCCEEDED_WITH_ERRORS",
    )
    assert report["counts"] | {"lines": 5} == report["counts"]
    assert (report["counts"]["accepted"], report["counts"]["rejected"]) == (3, 1)
    rejects = [json.loads(line) for line in (tmp_path / "r.ndjson").read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in rejects] == [(2, "INVALID_JSON")]
    assert [p["user_account_id"] for p in export(tmp_path / "s")] == ["alice"]


def _lines(n: int) -> list[str | dict[str, object]]:
    lines: list[str | dict[str, object]] = []
    for i in range(n):
        who = {"compartment_id": "7", "user_account_id": f"u{i % 37}"}
        if i % 11 == 0:
            lines.append(delete(who))
        elif i % 13 == 0:
            lines.append("not json")
        else:
            lines.append(upsert(who, {"n": i, "tags": [i % 5]}, merge_objects=i % 2 == 0))
    return lines


@pytest.mark.parametrize("compressed", [False, True])
def test_in_process_and_the_pipeline_give_the_same_store_rejects_and_counts(
    tmp_path: Path, compressed: bool
) -> None:
    first = write_lines(tmp_path / "a.ndjson", _lines(300))
    second = write_lines(tmp_path / "b.ndjson", _lines(500)[200:])
    if compressed:
        gz = tmp_path / "b.ndjson.gz"
        gz.write_bytes(gzip.compress(second.read_bytes()))
        second = gz
    times = ("created_at", "last_modified_at")
    seen: dict[str, tuple[list[dict[str, Any]], list[Any], list[str]]] = {}
    for name, beam in (("in_process", ()), ("pipeline", ONE_WORKER)):
        store = tmp_path / f"store-{name}"
        counts, rejects = [], []
        for i, commands in enumerate((first, second, first)):
            report, reject_file = tmp_path / f"{name}-{i}.json", tmp_path / f"{name}-{i}.rejects"
            argv: list[str | Path] = ["run", "--store", store, "--report", report]
            argv += ["--rejects", reject_file, "--allow-reapply", commands]
            result = run_cli(*argv, beam=beam)
            assert result.returncode == 0, result.stderr
            got = json.loads(report.read_text())
            assert got["runner"] == ("InProcess" if name == "in_process" else "FnApiRunner")
            counts.append((got["counts"], got["rejects_by_code"], got["status"]))
            rejects.append(reject_file.read_text())
        profiles = [{k: v for k, v in p.items() if k not in times} for p in export(store)]
        seen[name] = (profiles, counts, rejects)
    assert seen["in_process"] == seen["pipeline"]
    assert len(seen["pipeline"][0]) > 10
    assert all(r for r in seen["pipeline"][2])


def test_in_process_takes_no_beam_option(tmp_path: Path) -> None:
    commands = write_lines(tmp_path / "in.ndjson", [upsert(ALICE, {"a": 1})])
    result = run_cli(
        "run",
        "--store",
        tmp_path / "s",
        "--runner",
        "InProcess",
        commands,
        beam=("--direct_num_workers=2",),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "profile-import: error: --runner=InProcess runs no Beam pipeline: "
        "--direct_num_workers=2 cannot apply"
    )
    assert not (tmp_path / "s").exists()


def test_an_import_over_the_size_limit_runs_on_beam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = write_lines(tmp_path / "in.ndjson", [upsert(ALICE, {"a": 1})] * 3)
    monkeypatch.setattr(runner_choice, "IN_PROCESS_MAX_BYTES", commands.stat().st_size - 1)
    monkeypatch.setattr(runner_choice, "LOCAL_MAX_BYTES", commands.stat().st_size - 1)
    settings = RunSettings(inputs=[str(commands)], store=str(tmp_path / "s"))
    outcome = Execution(settings).run()
    assert outcome.exit_code == 0, outcome.report["message"]
    assert outcome.report["runner"] == "FnApiRunner"
    assert outcome.report["counts"]["accepted"] == 3


def test_a_failed_in_process_run_says_why_in_one_line_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s"
    good = write_lines(tmp_path / "a.ndjson", [upsert(ALICE, {"a": 1})])
    assert run_cli("run", "--store", store, good, beam=()).returncode == 0
    # Damage the size check cannot see: one byte of a bucket file changed.
    bucket = next((store / "data").rglob("bucket-*.kv"))
    data = bucket.read_bytes()
    assert data.count(b'"a":1') == 1
    bucket.write_bytes(data.replace(b'"a":1', b'"a":2'))
    more = write_lines(tmp_path / "b.ndjson", [upsert(ALICE, {"b": 1})])
    result = run_cli("run", "--store", store, "--report", tmp_path / "r.json", more, beam=())
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("profile-import: error: the import failed: store ")
    assert "damaged" in last and last.endswith("the store is unchanged")
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "FAILED"
    assert len(run_cli("versions", "--store", store).stdout.strip().splitlines()) >= 1


def _in_workers(
    tmp_path: Path, inputs: list[Path], store: Path, **settings: Any
) -> tuple[dict[str, Any], int]:
    """An in-process run whose inputs, however small, go to forked workers;
    its report and exit status."""
    run = RunSettings(
        inputs=[str(p) for p in inputs],
        store=str(store),
        rejects_path=str(tmp_path / "rejects.ndjson"),
        buckets=4,
        **settings,
    )
    outcome = Execution(run).run()
    return outcome.report, outcome.exit_code


@pytest.fixture(params=[2, 3])
def workers_always(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every in-process run forks as many workers as the parameter (more
    than this machine's cores for 3), whatever its size; their pids, as
    started."""
    pids: list[int] = []

    class Counted(forked_workers.Workers):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            pids.extend(p.pid for p in self.processes if p.pid is not None)

    monkeypatch.setattr(runner_choice, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(runner_choice, "usable_cores", lambda: request.param)
    monkeypatch.setattr(forked_workers, "Workers", Counted)
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_rerun_in_workers_applies_nothing_and_stops_them(
    tmp_path: Path, workers_always: list[int]
) -> None:
    """The workers start checking while this process hashes the inputs; the
    ledger says the input was applied, so they are stopped before applying."""
    workers = runner_choice.usable_cores()
    lines = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(40)]
    first = write_lines(tmp_path / "a.ndjson", lines)
    report, code = _in_workers(tmp_path, [first], tmp_path / "s")
    assert code == 0 and report["counts"]["profiles_created"] == 40
    assert len(workers_always) == workers and report["workers"] == workers
    before = export(tmp_path / "s")
    # After a first run: multiprocessing keeps its shared memory arena open.
    fds = os.listdir("/proc/self/fd")
    report, code = _in_workers(tmp_path, [first], tmp_path / "s")
    assert code == 0 and report["status"] == "ALREADY_APPLIED", report["message"]
    assert len(workers_always) == 2 * workers and all(map(_gone, workers_always))
    assert export(tmp_path / "s") == before
    assert os.listdir("/proc/self/fd") == fds  # no pipe left open


def test_a_run_with_an_applied_input_in_workers_applies_only_the_new_one(
    tmp_path: Path, workers_always: list[int]
) -> None:
    """Speculative workers over both inputs are stopped; the run starts again
    over the new input alone, in workers again."""
    workers = runner_choice.usable_cores()
    old = write_lines(tmp_path / "old.ndjson", [upsert(ALICE, {"v": 1}), "{bad"])
    assert _in_workers(tmp_path, [old], tmp_path / "s")[1] == 0
    new = write_lines(
        tmp_path / "new.ndjson",
        [upsert(ALICE, {"w": 2}), "{bad", *(upsert({"email_hash": f"h{i}"}, {}) for i in range(9))],
    )
    report, code = _in_workers(tmp_path, [old, new], tmp_path / "s")
    assert code == 0, report["message"]
    assert [i["applied"] for i in report["inputs"]] == [False, True]
    assert report["counts"]["lines"] == 11 and report["counts"]["rejected"] == 1
    assert len(workers_always) == 3 * workers  # first run; stopped; over the new input
    rejects = [json.loads(x) for x in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in rejects] == [(str(new), 2)]
    alice = [p for p in export(tmp_path / "s") if p.get("user_account_id") == "alice"]
    assert [p["user_profile"] for p in alice] == [{"v": 1, "w": 2}]


def _holds(splits: Any, failing: int, size: int) -> bool:
    """Whether these splits of one input of `size` bytes are its first range
    (`failing` 0) or its last (-1): whichever worker claims them checks them."""
    if failing == 0:
        return bool(splits[0].start == 0)
    return splits[-1].end in (None, size)


@pytest.mark.parametrize("failing", [0, -1])
@pytest.mark.parametrize("step", ["check", "apply", "killed"])
def test_a_failure_in_any_worker_fails_the_run_with_its_own_cause(
    tmp_path: Path,
    workers_always: list[int],
    monkeypatch: pytest.MonkeyPatch,
    failing: int,
    step: str,
) -> None:
    """Whichever worker fails, while it checks the input's first or last
    range or after handing its lines over, or dies (SIGKILL) while it
    applies, the run fails at once with that worker's own cause, in one
    line, stops the others and publishes nothing."""
    workers = runner_choice.usable_cores()
    failing_range = failing
    failing %= workers
    lines = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(40)]
    first = write_lines(tmp_path / "a.ndjson", lines[:20])
    assert _in_workers(tmp_path, [first], tmp_path / "s")[1] == 0
    before = export(tmp_path / "s")
    second = write_lines(tmp_path / "b.ndjson", lines)
    check = local_steps.check

    def failing_check(job: Any, checker: Any, splits: Any) -> Any:
        if _holds(splits, failing_range, second.stat().st_size):
            raise StoreError(f"store s: cannot check range {failing_range} (test)")
        return check(job, checker, splits)

    def failing_apply(source: Any, sink: Any, bucket: int, *args: Any) -> dict[str, int]:
        if multiprocessing.current_process().name == f"profile-import worker {failing + 1}":
            if step == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise StoreError(f"store s: bucket {bucket} is damaged (test)")
        return apply_lines(source, sink, bucket, *args)

    if step == "check":
        monkeypatch.setattr(forked_workers, "check", failing_check)
    else:
        monkeypatch.setattr(local_steps, "apply_lines", failing_apply)
    report, code = _in_workers(tmp_path, [second], tmp_path / "s")
    assert code == 1 and report["status"] == "FAILED"
    if step == "killed":
        assert report["failure"] == (
            f"the import failed: worker {failing + 1} of {workers} was killed by SIGKILL "
            "before it finished"
        )
    else:
        assert report["failure"].startswith("the import failed: store s: ")
        assert report["failure"].endswith("(test)")
    assert all(map(_gone, workers_always))
    assert export(tmp_path / "s") == before
    assert not list((tmp_path / "s" / "staging").iterdir())


def test_the_workers_are_the_cores_this_process_may_use() -> None:
    assert runner_choice.usable_cores() == min(
        len(os.sched_getaffinity(0)), _cgroup_cores() or len(os.sched_getaffinity(0))
    )
    one_core = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            "from profile_import.runners import runner_choice as r;"
            "print(r.usable_cores(), r.local_workers(512 << 20))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert one_core.stdout.split() == ["1", "1"]


def _cgroup_cores() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except OSError:
        return None
    return None if quota == "max" else -(-int(quota) // int(period))


@pytest.mark.parametrize(
    ("size", "cores", "workers"),
    [
        (0, 16, 1),
        (MIB - 1, 16, 1),
        (MIB, 16, 2),
        (MIB, 1, 1),
        (5 * MIB, 16, 6),
        (5 * MIB, 4, 4),
        (512 * MIB, 2, 2),
    ],
)
def test_how_many_workers_a_local_run_forks(
    monkeypatch: pytest.MonkeyPatch, size: int, cores: int, workers: int
) -> None:
    monkeypatch.setattr(runner_choice, "usable_cores", lambda: cores)
    assert runner_choice.local_workers(size) == workers


@pytest.mark.slow
def test_an_input_in_workers_gives_the_pipelines_result(tmp_path: Path) -> None:
    """Past `PARALLEL_MIN_BYTES` forked workers check parts of the input; the
    store, rejects and counts are still the Beam pipeline's; pinned to one
    core, the run is one process and gives the same."""
    big = write_big_input(tmp_path / "big.ndjson", 60_000)
    with big.open("a", encoding="utf-8") as f:
        f.write("{broken\n" + json.dumps(upsert(ALICE, {"last": True})) + "\n")
    assert big.stat().st_size > runner_choice.PARALLEL_MIN_BYTES
    seen = []
    for name, beam, pinned in (
        ("in_process", (), False),
        ("one_core", (), True),
        ("pipeline", ONE_WORKER, False),
    ):
        store, report, rejects = tmp_path / name, tmp_path / f"{name}.json", tmp_path / name
        argv: list[str | Path] = ["run", "--store", store, "--report", report]
        argv += ["--rejects", rejects.with_suffix(".rej"), big]
        if pinned:
            command = ["taskset", "-c", "0", *CLI, *map(str, argv)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        else:
            result = run_cli(*argv, beam=beam)
        assert result.returncode == 0, result.stderr
        got = json.loads(report.read_text())
        expected = {"in_process": runner_choice.usable_cores(), "one_core": 1}
        assert got["workers"] == expected.get(name, got["workers"])
        times = ("created_at", "last_modified_at")
        profiles = [{k: v for k, v in p.items() if k not in times} for p in export(store)]
        seen.append((profiles, got["counts"], rejects.with_suffix(".rej").read_text()))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][1]["lines"] == 60_002 and seen[0][1]["rejected"] == 1


def _handed_over_crew(folder: Path) -> tuple[forked_workers.Crew, list[list[local_steps.Part]]]:
    """Two workers' checked parts (two ranges each, three buckets), their
    buckets shared out: bucket 0 is the largest, so worker 0 applies it."""

    def lines(bucket: int, start: int, count: int) -> BucketLines:
        keys = [b"key-%d-%d" % (bucket, start + i) for i in range(count)]
        contents: list[bytes | memoryview] = [b'{"line": "%s"}' % key for key in keys]
        return BucketLines(keys, bytearray([i % 3 for i in range(count)]), contents)

    crew = forked_workers.Crew([], workers=2, buckets=3, folder=str(folder))
    parts = [
        [
            local_steps.Part((0, start), {0: lines(0, start, 5), 1: lines(1, start, 2)})
            for start in (1, 101)
        ],
        [
            local_steps.Part((0, start), {1: lines(1, start, 1), 2: lines(2, start, 3)})
            for start in (51, 151)
        ],
    ]
    for worker_parts in parts:
        for part in worker_parts:
            crew.checked_range(0, part)
    crew.share_buckets()
    return crew, parts


def _as_lists(parts: Sequence[local_steps.BucketPart]) -> list[tuple[int, int, list[Any]]]:
    return [
        (index, start, list(zip(p.keys, p.kinds, map(bytes, p.lines), strict=True)))
        for index, start, p in batches.in_input_order(parts)
    ]


def test_workers_hand_each_other_the_lines_of_the_buckets_they_apply(tmp_path: Path) -> None:
    """Through the frames the Beam pipeline's shuffle uses: every part of
    every bucket reaches its owner whole, in input order."""
    crew, parts = _handed_over_crew(tmp_path)
    owners = {bucket: crew.owner(bucket) for bucket in range(3)}
    expected = {
        bucket: _as_lists(
            [
                (*part.position, part.buckets[bucket])
                for ps in parts
                for part in ps
                if bucket in part.buckets
            ]
        )
        for bucket in range(3)
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        mine = list(pool.map(crew.hand_over, [0, 1], parts))
    assert sorted(b for m in mine for b in m) == [0, 1, 2]
    for number, buckets in enumerate(mine):
        for bucket, got in buckets.items():
            assert owners[bucket] == number
            assert _as_lists(got) == expected[bucket]


def test_damaged_lines_handed_over_fail_the_worker_in_one_line(tmp_path: Path) -> None:
    crew, parts = _handed_over_crew(tmp_path)
    # Worker 0 hands worker 1 its lines of bucket 1 (worker 1 applies it).
    sender, receiver = 0, crew.owner(1)
    assert receiver == 1
    crew._send(sender, receiver, parts[sender])
    handed = tmp_path / f"{sender}-to-{receiver}.batches"
    handed.write_bytes(handed.read_bytes()[:-1])
    with pytest.raises(local_steps.InProcessError, match=r"^worker 1 handed over damaged lines: "):
        crew._receive(sender, receiver)
