"""The Python API as a notebook or an Airflow task calls it: import, call,
read the returned report; one exception type; nothing printed, logging left
alone; the same lock as the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import profile_import
from profile_import import ProfileImportError, Report, Status, run_import
from profile_import.core.report import COUNT_NAMES
from profile_import.runners.options import OPTIONS

from ..helpers import CLI, export, upsert, write_big_input, write_lines

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "commands.ndjson"


@pytest.fixture
def untouched_logging(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """The test's calls print nothing, on either stream (file descriptors
    included: worker processes write there), and leave the root logger's
    handlers and level, and the project logger's level, as they were."""
    root, ours = logging.getLogger(), logging.getLogger("profile_import")
    before = (list(root.handlers), root.level, ours.level, ours.propagate)
    yield
    assert (list(root.handlers), root.level, ours.level, ours.propagate) == before
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_a_run_returns_its_report_typed(tmp_path: Path, untouched_logging: None) -> None:
    written = tmp_path / "report.json"
    report = run_import(
        [EXAMPLE], store=tmp_path / "s", rejects=tmp_path / "r.ndjson", report=written
    )
    assert report.status is Status.SUCCEEDED_WITH_ERRORS
    assert report.counts.lines == 9 and report.counts.accepted == 6
    assert report.counts.rejected == 2 and report.counts.profiles_created == 2
    assert dict(report.rejects_by_code) == {"INVALID_JSON": 1, "INVALID_FIELD": 1}
    assert report.version == 1 and report.parent_version is None and report.errors
    assert report.runner == "InProcess" and not report.dry_run
    assert report.rejects_file == str(tmp_path / "r.ndjson")
    assert [entry["path"] for entry in report.inputs] == [str(EXAMPLE)]
    assert report.started_at is not None and report.finished_at is not None
    assert report.started_at <= report.finished_at
    assert report.message.startswith("SUCCEEDED_WITH_ERRORS: 9 lines, 6 accepted, 2 rejected")
    assert len(report.data) == 2 and report.failure is None
    # The same report as the one written, field for field.
    assert report.to_dict() == json.loads(written.read_text())
    assert Report.from_dict(report.to_dict()) == report
    assert len((tmp_path / "r.ndjson").read_text().splitlines()) == 2
    assert len(export(tmp_path / "s")) == 2


def test_the_report_is_frozen_and_its_dict_a_copy(tmp_path: Path) -> None:
    report = run_import(EXAMPLE, store=tmp_path / "s", rejects=tmp_path / "r.ndjson")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = Status.FAILED  # type: ignore[misc]
    copy = report.to_dict()
    copy["counts"]["lines"] = 0
    assert report.to_dict()["counts"]["lines"] == 9 == report.counts.lines


def test_a_second_call_on_the_same_store_is_already_applied(
    tmp_path: Path, untouched_logging: None
) -> None:
    store = tmp_path / "s"
    first = run_import([EXAMPLE], store=store, rejects=tmp_path / "r1.ndjson")
    again = run_import([EXAMPLE], store=store, rejects=tmp_path / "r2.ndjson")
    assert again.status is Status.ALREADY_APPLIED and again.execution_id != first.execution_id
    assert again.counts.profiles_created == 0 and again.counts.profiles_updated == 0
    (skipped,) = again.already_applied
    assert skipped["path"] == str(EXAMPLE)
    assert skipped["execution_id"] == first.execution_id
    assert skipped["version"] == first.version == 1
    assert again.inputs[0]["applied_by"]["execution_id"] == first.execution_id


def test_a_failed_run_raises_exit_1_with_its_report(
    tmp_path: Path, untouched_logging: None
) -> None:
    store = tmp_path / "s"
    with pytest.raises(ProfileImportError) as raised:
        run_import(EXAMPLE, store=store, rejects=tmp_path / "r.ndjson", max_rejects=0)
    error = raised.value
    assert error.exit_code == ProfileImportError.FAILED == 1
    assert str(error) == (
        f"2 rejected lines exceed --max-rejects 0; the store is unchanged; "
        f"rejects in {tmp_path / 'r.ndjson'}"
    )
    assert error.report is not None and error.report.status is Status.FAILED
    assert error.report.counts.lines == 9 and error.report.counts.rejected == 2
    assert error.report.counts.profiles_created == 0 and error.report.version is None
    assert error.report.failure == "2 rejected lines exceed --max-rejects 0"
    assert not (store / "CURRENT").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_reject_ratio": "abc"}, "max_reject_ratio='abc': must be a number"),
        ({"max_reject_ratio": 1.5}, "max_reject_ratio=1.5: must be between 0 and 1, not '1.5'"),
        ({"max_rejects": -1}, "max_rejects=-1: must be 0 or more, not '-1'"),
        ({"max_rejects": 2.5}, "max_rejects=2.5: must be a whole number, 0 or more, not '2.5'"),
        ({"max_rejects": True}, "max_rejects=True: must be a number"),
        ({"buckets": 0}, "buckets=0: must be 1 or more, not '0'"),
        ({"lock_timeout": float("nan")}, "lock_timeout=nan: must be a number, 0 or more"),
        ({"dry_run": "yes"}, "dry_run='yes': must be True or False"),
        ({"store": ""}, "store='': must be a path or URL"),
        ({"report": "-"}, "report='-': the Python API writes nothing to standard output"),
        ({"rejects": "-"}, "rejects='-': the Python API writes nothing to standard output"),
        ({"default_compartment_id": ""}, "--default-compartment-id must not be empty"),
        ({"runner": "Bogus"}, "--runner=Bogus: not a Beam runner"),
        ({"beam_args": ["--no_such_option=1"]}, "unknown option(s): --no_such_option=1"),
        ({"beam_args": "--direct_num_workers=2"}, "must be a list of '--name=value' Beam"),
        ({"allow_undeclared_properties": True}, "needs --properties-file"),
    ],
)
def test_a_usage_error_raises_exit_2(
    tmp_path: Path, options: dict[str, Any], message: str, untouched_logging: None
) -> None:
    arguments: dict[str, Any] = {"store": tmp_path / "s", **options}
    with pytest.raises(ProfileImportError) as raised:
        run_import(EXAMPLE, **arguments)
    assert raised.value.exit_code == ProfileImportError.USAGE == 2
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing ran: no store, no rejects


def test_an_unreadable_input_raises_exit_2_with_the_failed_report(
    tmp_path: Path, untouched_logging: None
) -> None:
    written = tmp_path / "report.json"
    missing = tmp_path / "missing.ndjson"
    with pytest.raises(ProfileImportError) as raised:
        run_import([EXAMPLE, missing], store=tmp_path / "s", report=written)
    error = raised.value
    assert error.exit_code == 2 and str(error) == f"input {missing}: not found"
    assert error.report is not None and error.report.status is Status.FAILED
    # What monitoring reads at --report says so too, as the command's does.
    assert json.loads(written.read_text()) == error.report.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_the_keywords_are_the_options_of_run() -> None:
    """A new option of `profile-import run` (runners.options) is a keyword
    too: add it to run_import, named as the command line names it."""
    keywords = {
        name
        for name, parameter in inspect.signature(run_import).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    options = {"dry_run" if o.name == "import_dry_run" else o.name for o in OPTIONS}
    assert keywords == (options - {"inputs"}) | {"runner", "beam_args"}


def test_the_report_types_every_field_of_the_report(tmp_path: Path) -> None:
    """A new field of the report (core.report, transforms.finalize) is a
    field of Report too."""
    store = tmp_path / "s"
    reports = [run_import(EXAMPLE, store=store, rejects=tmp_path / f"r{n}") for n in (1, 2)]
    typed = {f.name for f in dataclasses.fields(Report)} - {"_raw"}
    for report in reports:
        assert set(report.to_dict()) <= typed
    assert {f.name for f in dataclasses.fields(reports[0].counts)} == set(COUNT_NAMES)


def test_importing_the_package_and_the_api_imports_no_beam() -> None:
    code = (
        "import sys, profile_import; "
        "from profile_import import run_import, Report, ProfileImportError; "
        "assert 'apache_beam' not in sys.modules and 'jsonschema' not in sys.modules; "
        "print(profile_import.__all__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # Every public name resolves: the API's from `api`, the Beam composite's
    # (which imports Beam when asked) from `transforms.import_profiles`.
    composite = {"ImportProfiles", "CommandLine"}
    assert set(profile_import.__all__) - composite <= set(dir(profile_import.api))
    for name in profile_import.__all__:
        assert getattr(profile_import, name) is not None


@pytest.mark.slow
def test_a_beam_run_prints_nothing_and_leaves_logging_alone(
    tmp_path: Path, untouched_logging: None
) -> None:
    """Beam's local runner with worker processes: its log and the workers'
    output go nowhere the caller did not send them."""
    report = run_import(
        EXAMPLE,
        store=tmp_path / "s",
        rejects=tmp_path / "r.ndjson",
        runner="FnApiRunner",
        beam_args=["--direct_num_workers=2"],
    )
    assert report.status is Status.SUCCEEDED_WITH_ERRORS
    assert report.runner == "FnApiRunner" and report.workers == 2
    assert report.counts.accepted == 6 and report.version == 1


@pytest.mark.slow
def test_a_script_that_sets_up_no_logging_sees_nothing_of_a_beam_run(tmp_path: Path) -> None:
    """A plain script (no handler anywhere): Python would print any warning a
    library logs on stderr (logging.lastResort), so the run must log none."""
    script = (
        "import sys, profile_import\n"
        "report = profile_import.run_import(sys.argv[1], store=sys.argv[2], rejects=sys.argv[3],"
        " runner='FnApiRunner', beam_args=['--direct_num_workers=2'])\n"
        "print(report.status.value)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(EXAMPLE), str(tmp_path / "s"), str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "SUCCEEDED_WITH_ERRORS\n", "")


@pytest.mark.slow
def test_the_store_lock_is_the_command_lines(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run_import(EXAMPLE, store=store, rejects=tmp_path / "r0")
    big = write_big_input(tmp_path / "big.ndjson", 100_000)
    process = subprocess.Popen(
        [*CLI, "run", "--store", str(store), "--report", os.devnull, str(big)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:  # the run's log, phase by phase
            if "waiting for the store lock: done" in line:
                # Held still while it holds the store, whatever the machine's load.
                os.killpg(process.pid, signal.SIGSTOP)
                break
        else:
            pytest.fail(f"the command line's run ended: {process.wait()}")
        mine = write_lines(tmp_path / "mine.ndjson", [upsert({"email_hash": "mine"}, {"n": 1})])
        with pytest.raises(ProfileImportError) as refused:
            run_import(mine, store=store, rejects=tmp_path / "r1")
        assert refused.value.exit_code == 1
        assert "is in use by another run (pid" in str(refused.value)
        assert refused.value.report is not None
        assert refused.value.report.status is Status.FAILED
        os.killpg(process.pid, signal.SIGCONT)
        waited = run_import(mine, store=store, rejects=tmp_path / "r2", lock_timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGCONT)
        rest = process.communicate(timeout=300)[1]
    assert process.returncode == 0, rest
    # The command line's run published first (version 2), then this one.
    assert waited.status is Status.SUCCEEDED and waited.version == 3
    assert waited.parent_version == 2
    assert "mine" in {p.get("email_hash") for p in export(store)}


# A notebook's cell: logging as the notebook configures it, the run interrupted.
NOTEBOOK_CELL = """
import logging, sys
logging.basicConfig(level=logging.INFO)
import profile_import
try:
    profile_import.run_import(sys.argv[1], store=sys.argv[2], report=sys.argv[3])
except KeyboardInterrupt:
    sys.exit(3)
"""


@pytest.mark.slow
def test_an_interrupted_run_publishes_nothing_and_releases_the_store(tmp_path: Path) -> None:
    store, written = tmp_path / "s", tmp_path / "report.json"
    run_import(EXAMPLE, store=store, rejects=tmp_path / "r0")
    current = (store / "CURRENT").read_bytes()
    big = write_big_input(tmp_path / "big.ndjson", 100_000)
    process = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK_CELL, str(big), str(store), str(written)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # the phases, where the notebook's logging sends them
        if "waiting for the store lock: done" in line:
            os.kill(process.pid, signal.SIGSTOP)  # holding the store, whatever the load
            os.kill(process.pid, signal.SIGINT)  # Ctrl-C, delivered once it goes on
            os.kill(process.pid, signal.SIGCONT)
            break
    else:
        pytest.fail(f"the run ended: {process.wait()}")
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 3, rest
    report = json.loads(written.read_text())
    assert report["status"] == "FAILED" and report["failure"] == "interrupted (SIGINT)"
    assert (store / "CURRENT").read_bytes() == current
    # The lock went with the run: the next one takes the store at once.
    again = run_import(big, store=store, rejects=tmp_path / "r1")
    assert again.status is Status.SUCCEEDED and again.version == 2


# The same cell on Beam's local runner; once interrupted, the worker
# processes it still has (none, once the run has stopped them).
BEAM_NOTEBOOK_CELL = """
import os, sys, time
from pathlib import Path
import profile_import
try:
    profile_import.run_import(
        sys.argv[1], store=sys.argv[2], report=sys.argv[3], split_bytes=1 << 20,
        runner="FnApiRunner", beam_args=["--direct_num_workers=2"],
    )
except KeyboardInterrupt:
    tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
    print(sum(len((t / "children").read_text().split()) for t in tasks), flush=True)
    sys.exit(3)
"""


@pytest.mark.slow
def test_an_interrupted_beam_run_stops_its_workers_and_releases_the_store(
    tmp_path: Path,
) -> None:
    """Ctrl-C in a notebook stops a run on Beam's local runner too: its worker
    processes end with it, it publishes nothing, its FAILED report counts
    what the finished splits checked, and the store is free at once."""
    store, written = tmp_path / "s", tmp_path / "report.json"
    run_import(EXAMPLE, store=store, rejects=tmp_path / "r0")
    current = (store / "CURRENT").read_bytes()
    big = write_big_input(tmp_path / "big.ndjson", 100_000)
    process = subprocess.Popen(
        [sys.executable, "-c", BEAM_NOTEBOOK_CELL, str(big), str(store), str(written)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(store.glob("staging/*/counts/counts-*.json")):  # mid-pipeline
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGINT)
        interrupted = time.monotonic()
        out, err = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 3, err
    assert time.monotonic() - interrupted < 30
    assert out.strip() == "0"  # no worker process left running
    report = json.loads(written.read_text())
    assert report["status"] == "FAILED" and report["failure"] == "interrupted (SIGINT)"
    counts = report["counts"]
    assert 0 < counts["lines"] < 100_000 and counts["accepted"] == counts["lines"]
    assert (store / "CURRENT").read_bytes() == current
    again = run_import(big, store=store, rejects=tmp_path / "r1")  # the store is free
    assert again.status is Status.SUCCEEDED and again.version == 2


def test_get_profile_and_export_profiles_read_what_the_command_line_reads(
    tmp_path: Path, untouched_logging: None
) -> None:
    store = tmp_path / "s"
    lines = [
        upsert({"email_hash": "e1"}, {"n": 1}),
        upsert({"compartment_id": "c", "user_account_id": 7}, {"n": 2}),
        upsert({"user_agent_id": "ua"}, {"n": 3}),
    ]
    run_import(write_lines(tmp_path / "in.ndjson", lines), store=store)
    exported = list(profile_import.export_profiles(store))
    assert [p["user_profile"]["n"] for p in exported] == [2, 1, 3]  # by identifier
    found = profile_import.get_profile(store, email_hash="e1")
    assert found is not None and found["user_profile"] == {"n": 1} and found in exported
    account = profile_import.get_profile(store, compartment_id="c", user_account_id="7")
    assert account is not None and account["user_profile"] == {"n": 2}
    assert profile_import.get_profile(store, user_agent_id="nobody") is None
    with pytest.raises(ProfileImportError) as usage:
        profile_import.get_profile(store, email_hash="e1", user_agent_id="ua")
    assert usage.value.exit_code == 2 and "exactly one identifier" in str(usage.value)
    with pytest.raises(ProfileImportError) as missing:
        profile_import.export_profiles(tmp_path / "typo")
    assert missing.value.exit_code == 1
    assert str(missing.value) == f"no profile store at {tmp_path / 'typo'}"
    assert not (tmp_path / "typo").exists()


def test_a_damaged_store_raises_while_it_is_read(tmp_path: Path) -> None:
    store = tmp_path / "s"
    run_import(EXAMPLE, store=store, rejects=tmp_path / "r")
    for shard in store.glob("data/*/bucket-*"):
        shard.write_bytes(b"")
    with pytest.raises(ProfileImportError) as damaged:
        list(profile_import.export_profiles(store))
    assert damaged.value.exit_code == 1 and "damaged" in str(damaged.value)
    assert damaged.value.report is None
