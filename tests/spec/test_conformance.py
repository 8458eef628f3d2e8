"""The shared conformance vectors, carried in tests/spec/conformance, run through the CLI.

Same rules as the shared runner: each case runs in a fresh folder, every run is
`profile-import run --store S --rejects R --report P [--changes C] [options] FILES...`,
then `export` must print the expected profiles (system fields required, not
compared), and `changes --since V` the expected changes.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ..helpers import CLI, ONE_WORKER, PORTABLE, SYSTEM_FIELDS, run_cli
from ..object_servers import new_bucket, put

CASES = sorted((Path(__file__).parent / "conformance").glob("*.json"))
RUNNERS: dict[str, tuple[str, ...]] = {
    # No Beam option: a small import runs in this process (pipelines.in_process).
    "default": (),
    "local": ONE_WORKER,
    # The job-submission path Flink and Spark take, with an embedded job service.
    "portable": PORTABLE,
}

RUNNER_NAMES = {"default": "InProcess", "local": "FnApiRunner", "portable": "PortableRunner"}


def canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


# Each store, as `run_cases.py --store TEMPLATE` names it: a folder; a SQLite
# file; a table in the suite's own PostgreSQL server (tests/postgres_server.py);
# a bucket on the suite's own S3 or GCS server (tests/object_servers.py), where
# the inputs are put too.
STORES = {
    "folder": lambda tmp, case: str(tmp / "store"),
    "sqlite": lambda tmp, case: f"sqlite:///{tmp / 'p.db'}",
    "postgresql": lambda tmp, case: f"postgresql:///postgres?table=c_{case}_{uuid.uuid4().hex[:8]}",
    "s3": lambda tmp, case: f"s3://{new_bucket('s3')}/{case}",
    "gs": lambda tmp, case: f"gs://{new_bucket('gs')}/{case}",
}
FIXTURES = {"postgresql": "postgres", "s3": "s3_endpoint", "gs": "gcs_endpoint"}
# Every store on the local runner; the portable runner (whose path does not
# depend on the store) on the folder store; the in-process run of a small
# import (the default) on every kind of store.
COMBINATIONS = [
    ("folder", "local"),
    ("sqlite", "local"),
    ("postgresql", "local"),
    pytest.param("s3", "local", marks=pytest.mark.slow),
    pytest.param("gs", "local", marks=pytest.mark.slow),
    ("folder", "portable"),
    ("folder", "default"),
    ("sqlite", "default"),
    ("postgresql", "default"),
    pytest.param("s3", "default", marks=pytest.mark.slow),
]


# The SPEC section (docs/SPEC.md) each vector checks, for `-m "spec(section=N)"`
# and the map in tests/README.md.
SECTIONS = {
    "identifier_rules": 1,
    "integer_identifiers_normalised": 1,
    "delete_missing_is_noop": 2,
    "delete_then_upsert_order": 2,
    "files_apply_in_given_order": 2,
    "force_replace": 2,
    "seed_merge_objects_example": 2,
    "shallow_merge_default": 2,
    "envelope_errors": 3,
    "rerun_is_idempotent": 4,
    "rerun_per_input": 4,
    "change_feed": 6,
}


def test_every_vector_names_its_spec_section() -> None:
    assert sorted(p.stem for p in CASES if p.stem not in SECTIONS) == []


@pytest.mark.parametrize(("store_kind", "runner"), COMBINATIONS)
@pytest.mark.parametrize(
    "case_path",
    [
        pytest.param(p, id=p.stem, marks=pytest.mark.spec(section=SECTIONS.get(p.stem, 0)))
        for p in CASES
    ],
)
def test_conformance_case(
    case_path: Path, store_kind: str, runner: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_case(case_path, store_kind, tmp_path, request, runner)


def run_case(
    case_path: Path,
    store_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    runner: str = "default",
    command: Sequence[str] = CLI,
    beam: Sequence[str] | None = None,
    runner_name: str | None = None,
) -> None:
    """One case on one store, through `command` (this checkout's, or an installed one);
    `beam` and `runner_name`: another runner's options and the name its reports give."""
    case = json.loads(case_path.read_text(encoding="utf-8"))
    if store_kind in FIXTURES:
        request.getfixturevalue(FIXTURES[store_kind])
    store = STORES[store_kind](tmp_path, case_path.stem)
    in_bucket = store_kind in ("s3", "gs")
    options: list[str] = []
    if case.get("options", {}).get("default_compartment_id") is not None:
        options += ["--default-compartment-id", str(case["options"]["default_compartment_id"])]
    for i, run in enumerate(case["runs"]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        files = case_files(run)
        for name, data in files.items():
            (folder / name).write_bytes(data)
            if in_bucket:
                put(f"{store}-inputs/run{i}/{name}", data)
        order = run.get("order") or sorted(files)
        inputs = [f"{store}-inputs/run{i}/{n}" if in_bucket else folder / n for n in order]
        rejects, report = folder / "rejects.ndjson", folder / "report.json"
        changes = folder / "changes.ndjson"
        asked_changes: list[str | Path] = ["--changes", changes] if "expect_changes" in run else []
        result = run_cli(
            "run",
            "--store",
            store,
            "--rejects",
            rejects,
            "--report",
            report,
            *asked_changes,
            *options,
            *run.get("args", []),
            *inputs,
            beam=RUNNERS[runner] if beam is None else beam,
            command=command,
        )
        want_status = run.get("expect_status")
        if want_status == "FAILED":
            assert result.returncode != 0
        else:
            assert result.returncode == 0, result.stderr
        got_report = json.loads(report.read_text())
        if want_status != "FAILED":
            assert got_report["runner"] == (runner_name or RUNNER_NAMES[runner])
        check_run(run, got_report, changes, rejects)
    check_store(store, case, command)


def case_files(run: dict[str, Any]) -> dict[str, bytes]:
    """A run's input files by name: `files` as lines, `files_b64` as bytes."""
    files = {n: ("\n".join(lines) + "\n").encode() for n, lines in run.get("files", {}).items()}
    return files | {n: base64.b64decode(b) for n, b in run.get("files_b64", {}).items()}


def check_run(run: dict[str, Any], report: dict[str, Any], changes: Path, rejects: Path) -> None:
    """What one run of a case gave against what it expects: its report's status
    and counts, the changes it wrote (`--changes`) and its reject records."""
    want_status = run.get("expect_status")
    if want_status:
        assert report["status"] == want_status
    for name, value in run.get("expect_counts", {}).items():
        assert report["counts"][name] == value, name
    if "expect_changes" in run:
        written = changes.read_text().splitlines() if changes.exists() else []
        assert_changes(list(map(json.loads, written)), run["expect_changes"])
    if want_status in ("FAILED", "ALREADY_APPLIED"):
        return
    got = sorted(
        (Path(r["file"]).name, r["line"], r["code"])
        for r in map(json.loads, rejects.read_text().splitlines())
    )
    want = sorted((r["file"], r["line"], r["code"]) for r in run.get("expect_rejects", []))
    assert got == want


def check_store(store: str | Path, case: dict[str, Any], command: Sequence[str] = CLI) -> None:
    """The store after all of a case's runs: `export` gives the expected
    profiles (system fields required, not compared), and each `changes
    --since V` the case asks gives its changes or fails as it expects."""
    exported = run_cli("export", "--store", store, command=command)
    assert exported.returncode == 0, exported.stderr
    profiles = []
    for line in exported.stdout.splitlines():
        profile = json.loads(line)
        for name in SYSTEM_FIELDS:
            assert name in profile
            del profile[name]
        profiles.append(canon(profile))
    assert sorted(profiles) == sorted(canon(p) for p in case["expect_export"])
    for asked in case.get("expect_changes_since", []):
        since = run_cli(
            "changes", "--store", store, "--since", str(asked["since"]), command=command
        )
        if asked.get("expect_status") == "FAILED":
            assert since.returncode != 0, f"--since {asked['since']}"
            continue
        assert since.returncode == 0, since.stderr
        got_changes = [json.loads(line) for line in since.stdout.splitlines() if line.strip()]
        assert_changes(got_changes, asked["changes"])


def assert_changes(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Changes (SPEC §6) as the shared runner compares them: as a set, on `change`,
    the identifier fields, `user_profile`, and `version` where the case gives it;
    the timestamps required (but on deletions), not compared."""
    for change in got:
        if change.get("change") != "deleted":
            assert all(name in change for name in SYSTEM_FIELDS), change
    dropped = {*SYSTEM_FIELDS, *(() if any("version" in w for w in want) else ("version",))}
    assert sorted(canon({k: v for k, v in c.items() if k not in dropped}) for c in got) == sorted(
        canon({k: v for k, v in w.items() if k not in dropped}) for w in want
    )
