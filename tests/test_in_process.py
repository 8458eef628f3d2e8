"""Small imports run in this process, without Beam (`pipelines.in_process`).

The rule that picks the engine (`runners.runner_choice`), that the default
run of a small import never imports Beam, and that it gives the same store,
rejects and counts as the Beam pipeline on the same inputs.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from profile_import.inputs.plan import InputFile
from profile_import.pipelines import in_process
from profile_import.runners import runner_choice
from profile_import.runners.execution import Execution, RunSettings
from profile_import.stores import StoreError
from profile_import.transforms.apply_bucket import apply_bucket

from .helpers import ONE_WORKER, delete, export, run_cli, upsert, write_big_input, write_lines

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
        # beyond 48 MiB it cannot be cut in halves: Beam.
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


def _in_halves(
    tmp_path: Path, inputs: list[Path], store: Path, **settings: Any
) -> tuple[dict[str, Any], int]:
    """An in-process run whose inputs, however small, go to two forked halves;
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


@pytest.fixture
def halves_always(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every in-process run cut in two halves; the forks' pids, as started."""
    forks: list[int] = []

    class Counted(in_process.Forked[Any]):
        def __init__(self, work: Any, folder: str) -> None:
            super().__init__(work, folder)
            forks.append(self.pid)

    monkeypatch.setattr(in_process, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(in_process, "Forked", Counted)
    return forks


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_rerun_in_two_halves_applies_nothing_and_stops_both(
    tmp_path: Path, halves_always: list[int]
) -> None:
    """The halves start checking while this process hashes the inputs; the
    ledger says the input was applied, so both are stopped before applying."""
    lines = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(40)]
    first = write_lines(tmp_path / "a.ndjson", lines)
    fds = os.listdir("/proc/self/fd")
    report, code = _in_halves(tmp_path, [first], tmp_path / "s")
    assert code == 0 and report["counts"]["profiles_created"] == 40
    assert len(halves_always) == 2 and report["workers"] == 2
    before = export(tmp_path / "s")
    report, code = _in_halves(tmp_path, [first], tmp_path / "s")
    assert code == 0 and report["status"] == "ALREADY_APPLIED", report["message"]
    assert len(halves_always) == 4 and all(map(_gone, halves_always))
    assert export(tmp_path / "s") == before
    assert os.listdir("/proc/self/fd") == fds  # no pipe left open


def test_a_run_with_an_applied_input_in_two_halves_applies_only_the_new_one(
    tmp_path: Path, halves_always: list[int]
) -> None:
    """Speculative halves over both inputs are stopped; the run starts again
    over the new input alone, in two halves again."""
    old = write_lines(tmp_path / "old.ndjson", [upsert(ALICE, {"v": 1}), "{bad"])
    assert _in_halves(tmp_path, [old], tmp_path / "s")[1] == 0
    new = write_lines(
        tmp_path / "new.ndjson",
        [upsert(ALICE, {"w": 2}), "{bad", *(upsert({"email_hash": f"h{i}"}, {}) for i in range(9))],
    )
    report, code = _in_halves(tmp_path, [old, new], tmp_path / "s")
    assert code == 0, report["message"]
    assert [i["applied"] for i in report["inputs"]] == [False, True]
    assert report["counts"]["lines"] == 11 and report["counts"]["rejected"] == 1
    assert len(halves_always) == 2 + 2 + 2  # first run; stopped; over the new input
    rejects = [json.loads(x) for x in (tmp_path / "rejects.ndjson").read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in rejects] == [(str(new), 2)]
    alice = [p for p in export(tmp_path / "s") if p.get("user_account_id") == "alice"]
    assert [p["user_profile"] for p in alice] == [{"v": 1, "w": 2}]


@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("step", ["check", "apply"])
def test_a_failure_in_either_half_fails_the_run_with_its_own_cause(
    tmp_path: Path, halves_always: list[int], monkeypatch: pytest.MonkeyPatch, side: int, step: str
) -> None:
    """Whichever half fails, before handing its lines over or after, the run
    fails with that half's error (not the other's report that its partner
    ended first), stops both and publishes nothing."""
    lines = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(40)]
    first = write_lines(tmp_path / "a.ndjson", lines[:20])
    assert _in_halves(tmp_path, [first], tmp_path / "s")[1] == 0
    before = export(tmp_path / "s")
    check_part = in_process.check_part

    def failing_check(splits: Any, *args: Any, **kwargs: Any) -> Any:
        half = 0 if splits[0].start == 0 else 1  # the second half starts past 0
        if half == failing:
            raise StoreError(f"store s: cannot check half {half} (test)")
        return check_part(splits, *args, **kwargs)

    def failing_apply(source: Any, sink: Any, bucket: int, *args: Any) -> dict[str, int]:
        if in_process.owner(bucket) == failing:
            raise StoreError(f"store s: bucket {bucket} is damaged (test)")
        return apply_bucket(source, sink, bucket, *args)

    failing = side
    if step == "check":
        monkeypatch.setattr(in_process, "check_part", failing_check)
    else:
        monkeypatch.setattr(in_process, "apply_bucket", failing_apply)
    report, code = _in_halves(tmp_path, [write_lines(tmp_path / "b.ndjson", lines)], tmp_path / "s")
    assert code == 1 and report["status"] == "FAILED"
    assert report["failure"].startswith("the import failed: store s: ")
    assert report["failure"].endswith("(test)")
    assert all(map(_gone, halves_always))
    assert export(tmp_path / "s") == before
    assert not list((tmp_path / "s" / "staging").iterdir())


@pytest.mark.slow
def test_an_input_in_two_halves_gives_the_pipelines_result(
    tmp_path: Path,
) -> None:
    """Past `PARALLEL_MIN_BYTES` a forked process checks the second half of the
    input; the store, rejects and counts are still the Beam pipeline's."""
    big = write_big_input(tmp_path / "big.ndjson", 60_000)
    with big.open("a", encoding="utf-8") as f:
        f.write("{broken\n" + json.dumps(upsert(ALICE, {"last": True})) + "\n")
    assert big.stat().st_size > in_process.PARALLEL_MIN_BYTES
    seen = []
    for name, beam in (("in_process", ()), ("pipeline", ONE_WORKER)):
        store, report, rejects = tmp_path / name, tmp_path / f"{name}.json", tmp_path / name
        argv: list[str | Path] = ["run", "--store", store, "--report", report]
        result = run_cli(*argv, "--rejects", rejects.with_suffix(".rej"), big, beam=beam)
        assert result.returncode == 0, result.stderr
        got = json.loads(report.read_text())
        times = ("created_at", "last_modified_at")
        profiles = [{k: v for k, v in p.items() if k not in times} for p in export(store)]
        seen.append((profiles, got["counts"], rejects.with_suffix(".rej").read_text()))
    assert seen[0] == seen[1]
    assert seen[0][1]["lines"] == 60_002 and seen[0][1]["rejected"] == 1
