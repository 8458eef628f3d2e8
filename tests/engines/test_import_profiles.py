"""The public Beam composite `ImportProfiles`, applied inside a pipeline of
one's own to command lines with their source and line number
(`transforms.import_profiles`), and the runnable example that composes it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import combiners

from profile_import import CommandLine, ImportProfiles

from ..helpers import delete, export, run_cli, upsert, without_times, write_lines
from ..spec.test_conformance import CASES, case_files, check_run, check_store

ROOT = Path(__file__).resolve().parents[2]
ALICE = {"compartment_id": "1000", "user_account_id": "alice"}
BOB = {"email_hash": "5d41402abc4b2a76b9719d911017c592"}


def _lines(source: str, lines: Sequence[str | dict[str, Any]], first: int = 1) -> list[CommandLine]:
    return [
        CommandLine(source, number, line if isinstance(line, str) else json.dumps(line))
        for number, line in enumerate(lines, first)
    ]


def _import(lines: Iterable[CommandLine], store: Path, **settings: Any) -> tuple[str, int, int]:
    """Runs ImportProfiles over `lines` in a TestPipeline, which checks that one
    report comes out; returns its (status, lines, rejected), as written."""
    settings.setdefault("report", str(store.with_name(f"{store.name}-report.json")))
    with TestPipeline(runner=FnApiRunner()) as pipeline:
        reports = pipeline | beam.Create(list(lines)) | ImportProfiles(str(store), **settings)
        assert_that(reports | combiners.Count.Globally(), equal_to([1]))
    report = json.loads(Path(settings["report"]).read_text())
    return report["status"], report["counts"]["lines"], report["counts"]["rejected"]


def test_import_profiles_in_a_pipeline_applies_each_source_once(tmp_path: Path) -> None:
    store, rejects, report = tmp_path / "s", tmp_path / "r.ndjson", tmp_path / "p.json"
    crm = _lines("crm", [upsert(ALICE, {"a": 1}), "{broken", "", delete(BOB)])
    # Out of order, as a PCollection comes: the line numbers give the order.
    web = _lines("web", [upsert(ALICE, {"b": 2}, merge_objects=True), upsert(BOB, {"c": 3})])
    with TestPipeline(runner=FnApiRunner()) as pipeline:
        reports = (
            pipeline
            | beam.Create([*reversed(crm), *web])
            | ImportProfiles(str(store), rejects=str(rejects), report=str(report))
        )
        assert_that(
            reports | beam.Map(lambda r: (r["status"], r["counts"]["lines"], r["version"])),
            equal_to([("SUCCEEDED_WITH_ERRORS", 6, 1)]),
        )
    written = json.loads(report.read_text())
    assert [(i["path"], i["lines"], i["applied"]) for i in written["inputs"]] == [
        ("crm", 4, True),
        ("web", 2, True),
    ]
    assert written["counts"] | {"accepted": 4, "rejected": 1, "blank": 1} == written["counts"]
    assert [(r["file"], r["line"], r["code"]) for r in map(json.loads, rejects.open())] == [
        ("crm", 2, "INVALID_JSON")
    ]
    profiles = without_times(export(store))
    assert {json.dumps(p["user_profile"], sort_keys=True) for p in profiles} == {
        '{"a": 1, "b": 2}',
        '{"c": 3}',
    }

    # The same sources again: applied before, nothing changes (SPEC §4).
    assert _import([*crm, *web], store) == ("ALREADY_APPLIED", 0, 0)
    # A new source beside an applied one: only the new one is applied.
    more = _lines("more", [upsert(BOB, {"d": 4}, merge_objects=True)])
    assert _import([*crm, *more], store) == ("SUCCEEDED", 1, 0)
    assert {json.dumps(p["user_profile"], sort_keys=True) for p in export(store)} == {
        '{"a": 1, "b": 2}',
        '{"c": 3, "d": 4}',
    }


def test_import_profiles_gives_the_command_lines_result(tmp_path: Path) -> None:
    """The same file through the command line and through the composite: the
    same profiles, counts and rejects."""
    lines: list[str | dict[str, Any]] = []
    for i in range(200):
        who = {"compartment_id": "7", "user_account_id": f"u{i % 17}"}
        lines.append(
            delete(who) if i % 11 == 0 else "not json" if i % 13 == 0 else upsert(who, {"n": i})
        )
    path = write_lines(tmp_path / "in.ndjson", lines)
    cli = run_cli("run", "--store", tmp_path / "a", "--report", tmp_path / "a.json", path)
    assert cli.returncode == 0, cli.stderr
    text = path.read_text().splitlines()
    _import(_lines(str(path), text), tmp_path / "b", report=str(tmp_path / "b.json"))
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert (a["counts"], a["rejects_by_code"]) == (b["counts"], b["rejects_by_code"])
    assert a["inputs"][0]["sha256"] == b["inputs"][0]["sha256"]  # the same content
    assert without_times(export(tmp_path / "a")) == without_times(export(tmp_path / "b"))


@pytest.mark.slow
def test_the_example_pipeline_runs_end_to_end(tmp_path: Path) -> None:
    """examples/compose_pipeline.py, as the README runs it, then `export`."""
    store = tmp_path / "store"
    argv = [sys.executable, str(ROOT / "examples" / "compose_pipeline.py"), "--store", str(store)]
    argv += ["--rejects", str(tmp_path / "r.ndjson")]
    argv += [str(ROOT / "examples" / "crm_export.csv"), str(ROOT / "examples" / "commands.ndjson")]
    first = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["status"] == "SUCCEEDED_WITH_ERRORS" and report["version"] == 1
    rejects = [json.loads(line) for line in (tmp_path / "r.ndjson").read_text().splitlines()]
    assert (Path(rejects[-1]["file"]).name, rejects[-1]["line"]) == ("crm_export.csv", 5)
    profiles = {p.get("user_account_id"): p["user_profile"] for p in export(store)}
    # The CRM rows, merged in line order: Alice's second row moved her city.
    assert profiles["acct-1"] == {
        "address": {"city": "Lille"},
        "opt_in": True,
        "first_name": "Alice",
    }
    assert profiles["acct-2"]["opt_in"] is False and "first_name" not in profiles["acct-3"]
    assert profiles["alice"]["first_name"] == "Alice"  # from commands.ndjson
    again = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "ALREADY_APPLIED"


def _file_lines(source: str, data: bytes) -> list[CommandLine]:
    """A file's lines as a source's, split as the reader splits them."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    return [CommandLine(source, n, piece) for n, piece in enumerate(pieces, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_conformance_case_through_import_profiles(case_path: Path, tmp_path: Path) -> None:
    """Every conformance vector, each file a source, on the folder store: the
    same reports' counts and statuses, rejects and store as the command line's."""
    case = json.loads(case_path.read_text(encoding="utf-8"))
    store = tmp_path / "store"
    settings = {"default_compartment_id": case.get("options", {}).get("default_compartment_id")}
    for i, run in enumerate(case["runs"]):
        # The composite's settings for the command-line options the cases use.
        options: dict[str, tuple[str, Any]] = {"--dry-run": ("dry_run", True)}
        unknown = [arg for arg in run.get("args", []) if arg not in options]
        assert not unknown, f"a case with options this test does not pass on: {unknown}"
        asked: dict[str, Any] = dict(options[arg] for arg in run.get("args", []))
        changes = tmp_path / f"changes{i}.ndjson"
        if "expect_changes" in run:
            asked["changes"] = str(changes)
        files = case_files(run)
        # Sources apply in the order of their names: named so as to keep the case's.
        order = run.get("order") or sorted(files)
        lines = [
            line
            for k, name in enumerate(order)
            for line in _file_lines(f"{k:02d}/{name}", files[name])
        ]
        rejects, report = tmp_path / f"rejects{i}.ndjson", tmp_path / f"report{i}.json"
        _import(lines, store, rejects=str(rejects), report=str(report), **settings, **asked)
        check_run(run, json.loads(report.read_text()), changes, rejects)
    check_store(store, case)
