"""What a person sees: one-line errors, exit codes, help, version, runner names, the log."""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest

from profile_import.runners import local, logs
from profile_import.runners.cli import build_parser

from ..helpers import ONE_WORKER, run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "commands.ndjson"
LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (INFO|WARNING|ERROR) profile_import: (.*)$"
)
# The launcher's phases; the final step (checks, rejects, publish) is the
# pipeline's last, and its outcome ends the pipeline's line.
PHASES = ["listing inputs", "waiting for the store lock"]
# The last phase, by engine: (Beam options, its name, what its start says).
ENGINES = {
    "in_process": ((), "in process", r"no Beam pipeline"),
    "pipeline": (ONE_WORKER, "pipeline", r"FnApiRunner, 1 worker\(s\)"),
}


def _parsers(
    parser: argparse.ArgumentParser, name: str = "profile-import"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{name} {choice.dest}: no help"
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_option_of_every_command_has_help() -> None:
    parsers = _parsers(build_parser())
    assert {name for name, _ in parsers} >= {
        "profile-import",
        "profile-import run",
        "profile-import export",
        "profile-import get",
    }
    for name, parser in parsers:
        assert parser.epilog and "130" in parser.epilog, name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings}"


def test_help_documents_the_exit_codes() -> None:
    for args in (["--help"], ["run", "--help"]):
        result = run_cli(*args, beam=())
        assert result.returncode == 0
        codes = re.findall(r"^  (\d+) +\S", result.stdout, flags=re.MULTILINE)
        assert codes == ["0", "1", "2", "130"], result.stdout


def test_version_comes_from_the_package_metadata() -> None:
    result = run_cli("--version", beam=())
    assert result.returncode == 0
    assert result.stdout == f"profile-import {version('profile-import')}\n"


def test_python_m_profile_import_is_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "profile_import", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("profile-import ")
    bad = subprocess.run(
        [sys.executable, "-m", "profile_import", "frobnicate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr


def _error_lines(stderr: str) -> list[str]:
    """stderr without the run's log lines."""
    return [line for line in stderr.splitlines() if not LOG_LINE.match(line)]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run"], "the following arguments are required: INPUT (see profile-import run --help)"),
        (
            ["run", "--max-rejects", "-1", "x"],
            "argument --max-rejects/--max_rejects: must be 0 or more",
        ),
        (
            ["run", "--max-reject-ratio", "abc", "x"],
            "argument --max-reject-ratio/--max_reject_ratio: must be a number between 0 and 1, "
            "not 'abc'",
        ),
        (
            ["run", "--lock-timeout", "soon", "x"],
            "argument --lock-timeout/--lock_timeout: must be a number, 0 or more, not 'soon'",
        ),
        (["run", "--buckets", "0", "x"], "argument --buckets: must be 1 or more, not '0'"),
        # No abbreviations: what run does not know goes to Beam, which knows
        # no --stor either, and never becomes --store.
        (["run", "--stor", "s", "x"], "unknown option(s): --stor (see --help)"),
        (["run", "--dry", "x"], "unknown option(s): --dry (see --help)"),
        (["verify", "--vers", "1"], "unrecognized arguments: --vers 1"),
        (["export", "--unknown"], "unrecognized arguments: --unknown (see profile-import --help)"),
        (
            ["run", "--direct_num_workers=abc", "x"],
            "--direct_num_workers: invalid int value: 'abc'",
        ),
        (
            ["run", "--direct_running_mode=bogus", "x"],
            "--direct_running_mode: invalid choice: 'bogus'",
        ),
        (["run", "--max_rejectz=0", "x"], "unknown option(s): --max_rejectz=0"),
        (["run", "--runner=Bogus", "x"], "--runner=Bogus: not a Beam runner; the local runner is"),
        (["run", "x.ndjson"], "input x.ndjson: not found"),
        (["run", "--runner=PortableRunner", "x"], "is on this machine, where its workers cannot"),
    ],
)
def test_an_error_is_one_line_cause_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], line: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if args[-1] == "x":
        args = [*args[:-1], str(EXAMPLE)]
    result = run_cli(*args, beam=())
    assert result.returncode == 2
    (error,) = _error_lines(result.stderr)
    assert error.startswith("profile-import: error: ") and line in error, error
    assert "usage:" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing ran: no store, no rejects


def test_an_unknown_runner_lists_the_known_ones(tmp_path: Path) -> None:
    result = run_cli("run", "--store", tmp_path / "s", "--runner=Prysm", EXAMPLE, beam=())
    (error,) = _error_lines(result.stderr)
    assert "FnApiRunner (the default) or DirectRunner" in error
    assert "DataflowRunner" in error and "PortableRunner" in error


@pytest.mark.parametrize("runner", ["DirectRunner", "direct", "FnApiRunner"])
def test_direct_runner_is_the_local_runner(tmp_path: Path, runner: str) -> None:
    flags = [f"--runner={runner}"]
    report = tmp_path / "report.json"
    result = run_cli(
        "run", "--store", tmp_path / "s", "--report", report, "--rejects", tmp_path / "r",
        *flags, EXAMPLE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rep = json.loads(report.read_text())
    assert rep["runner"] == "FnApiRunner" and rep["counts"]["accepted"] == 6


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], None),
        (["--runner=DirectRunner", "--direct_num_workers=3"], None),
        (["--runner=apache_beam.runners.SomeRunner"], None),  # a class, as Beam allows
        (["--runner=DataflowRunner"], None),  # known: refused later by the folder store
        (["--runner=dataflow"], None),
        (["--runner=Nope"], "--runner=Nope: not a Beam runner"),
        (["--direct_num_workers=x"], "--direct_num_workers: invalid int value: 'x'"),
        (["--direct_running_mode=fast"], "--direct_running_mode: invalid choice: 'fast'"),
        (["--no_such_option=1"], "unknown option(s): --no_such_option=1"),
    ],
)
def test_beam_options_are_checked(args: list[str], error: str | None) -> None:
    if error is None:
        local.check_options(args)
    else:
        with pytest.raises(local.OptionError) as caught:
            local.check_options(args)
        assert str(caught.value).startswith(error)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "is_local"),
    [
        (None, True),
        ("FnApiRunner", True),
        ("DirectRunner", True),
        ("directrunner", True),
        ("Direct", True),
        ("fnapi", True),
        ("PrismRunner", False),
        ("PortableRunner", False),
        ("SwitchingDirectRunner", False),
    ],
)
def test_local_runner_names(name: str | None, is_local: bool) -> None:
    assert local.is_local_name(name) is is_local
    options = local.pipeline_options([f"--runner={name}"] if name else [])
    assert local.is_local(options) is is_local


def test_log_times_are_iso_8601_utc() -> None:
    formatter = logs.UtcFormatter(logs.FORMAT)
    record = logging.LogRecord("profile_import", logging.INFO, __file__, 1, "x: %s", ("y",), None)
    record.created = 1_700_000_000.25
    assert formatter.format(record) == "2023-11-14T22:13:20.250Z INFO profile_import: x: y"


def _log(stderr: str) -> list[tuple[datetime, str]]:
    entries = []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if match:
            moment = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S.%f%z")
            entries.append((moment, match[3]))
    return entries


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_logs_when_each_phase_started_and_ended(tmp_path: Path, engine: str) -> None:
    beam, last, detail = ENGINES[engine]
    before = datetime.now(UTC).replace(microsecond=0)
    result = run_cli(
        "run", "--store", tmp_path / "s", "--report", tmp_path / "r.json",
        "--rejects", tmp_path / "rej", EXAMPLE, beam=beam,
    )  # fmt: skip
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stderr
    entries = _log(result.stderr)
    times = [moment for moment, _ in entries]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after
    messages = [message for _, message in entries]
    assert messages[0].startswith("execution ") and "into store" in messages[0]
    phases = [m.split(":")[0] for m in messages[1:]]
    assert phases == [p for p in [*PHASES, last] for _ in (0, 1)], messages
    assert all(re.fullmatch(r"[a-z ]+: started( \(.*\))?", m) for m in messages[1::2])
    assert all(re.fullmatch(r"[a-z ]+: done in \d+\.\d\d s( \(.*\))?", m) for m in messages[2::2])
    assert re.fullmatch(rf"{last}: started \({detail}\)", messages[5])
    assert re.fullmatch(
        rf"{last}: done in \d+\.\d\d s \(SUCCEEDED_WITH_ERRORS: 9 lines, .*"
        r"published as store version 1\)",
        messages[6],
    )
    # After the log, the one-line summary; nothing from Beam.
    assert _error_lines(result.stderr) == [
        line for line in result.stderr.splitlines() if line.startswith("profile-import: ")
    ]
    assert _error_lines(result.stderr)[0].startswith("profile-import: SUCCEEDED_WITH_ERRORS")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_run_logs_where_it_stopped(tmp_path: Path, engine: str) -> None:
    beam, last, _ = ENGINES[engine]
    result = run_cli(
        "run", "--store", tmp_path / "s", "--report", tmp_path / "r.json",
        "--rejects", tmp_path / "rej", "--max-rejects", "0", EXAMPLE, beam=beam,
    )  # fmt: skip
    assert result.returncode == 1
    messages = [message for _, message in _log(result.stderr)]
    assert re.fullmatch(
        rf"{last}: done in \d+\.\d\d s \(FAILED: 2 rejected lines exceed --max-rejects 0; "
        r".*nothing was published, the store is unchanged\)",
        messages[-1],
    )
    (error,) = _error_lines(result.stderr)
    assert error.startswith("profile-import: error: 2 rejected lines exceed --max-rejects 0")
    assert "the store is unchanged" in error and f"rejects in {tmp_path / 'rej'}" in error


def test_quiet_logs_nothing_and_verbose_adds_beams_log(tmp_path: Path) -> None:
    common: list[str | Path] = [
        "--report",
        tmp_path / "r.json",
        "--rejects",
        tmp_path / "rej",
        EXAMPLE,
    ]
    quiet = run_cli("run", "--store", tmp_path / "q", "--quiet", *common, beam=ONE_WORKER)
    assert quiet.returncode == 0 and quiet.stderr == ""
    verbose = run_cli("run", "--store", tmp_path / "v", "--verbose", *common, beam=ONE_WORKER)
    assert verbose.returncode == 0
    assert len(_log(verbose.stderr)) == 7  # the project's lines, as without --verbose
    assert re.search(r"Z (INFO|WARNING) apache_beam[\w.]*: ", verbose.stderr)
