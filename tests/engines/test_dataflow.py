"""Dataflow, offline: the Flex Template declares exactly the options of `run`, and the
job translates for the Dataflow service (`--dry_run`: built whole, never submitted)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from profile_import.core.commands import CheckSettings
from profile_import.inputs.plan import InputFile
from profile_import.pipelines import beam_pipeline
from profile_import.runners import cli
from profile_import.runners.beam_options import ImportOptions
from profile_import.runners.dataflow import launch
from profile_import.runners.execution import Execution, RunSettings
from profile_import.runners.options import OPTIONS, parse_run_args, template_metadata
from profile_import.stores.snapshot import SnapshotStore
from profile_import.transforms.steps.finalize import Finalizer, RunContext

from ..helpers import PORTABLE, export, message_lines, read_ndjson, run_cli, upsert, write_lines
from ..object_servers import new_bucket, put

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "runners" / "dataflow"
NOW = "2026-11-23T00:00:00.000Z"


def test_the_flex_template_declares_exactly_the_options_of_run() -> None:
    metadata = json.loads((TEMPLATE / "metadata.json").read_text())
    assert [p["name"] for p in metadata["parameters"]] == [o.name for o in OPTIONS]
    assert metadata == template_metadata()  # regenerate with tools/template_metadata.py
    assert all(p["helpText"] for p in metadata["parameters"])
    assert [p["name"] for p in metadata["parameters"] if not p["isOptional"]] == ["inputs"]


def test_beam_and_the_command_line_know_the_same_options() -> None:
    given = [
        "--inputs=gs://b/in/a.ndjson,gs://b/in/b.ndjson",
        "--store=gs://b/store",
        "--max_rejects=3",
        "--max-reject-ratio=0.5",
        "--import_dry_run=true",
        "--allow_reapply",
    ]
    beam_view = PipelineOptions(given).view_as(ImportOptions).get_all_options()
    ours, rest = parse_run_args([*given, "--runner=DataflowRunner"])
    assert rest == ["--runner=DataflowRunner"]
    for option in OPTIONS:
        assert beam_view[option.name] == getattr(ours, option.name), option.name
    assert (ours.max_rejects, ours.max_reject_ratio) == (3, 0.5)
    assert ours.import_dry_run is True and ours.allow_reapply is True
    help_text = run_cli("run", "--help").stdout
    for option in OPTIONS:
        if option.name != "inputs":  # the command line takes them as INPUT arguments
            assert option.cli_name in help_text, option.name
    assert isinstance(cli.build_parser(), cli.ArgumentParser)


def test_the_job_translates_for_dataflow_offline(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "store"), buckets=4)
    inputs = (
        InputFile(0, "gs://profile-import-test/in/a.ndjson", 300 << 20, None),
        InputFile(1, "gs://profile-import-test/in/b.ndjson.gz", 40 << 20, "gzip"),
    )
    ctx = RunContext(
        "e1", NOW, NOW, "DataflowRunner", None, "gs://profile-import-test/store", False, inputs
    )
    job = beam_pipeline.ImportJob(
        finalizer=Finalizer(ctx, store, None, None),
        check=CheckSettings(),
        semantics={},
        allow_reapply=False,
        buckets=4,
        source=store.source(None),
        work_dir="gs://profile-import-test/work/e1",
    )
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=profile-import-test",
            "--region=europe-west1",
            "--temp_location=gs://profile-import-test/tmp",
            "--job_name=profile-import-e1",
            "--sdk_container_image=europe-docker.pkg.dev/p/r/profile-import:1",
        ]
    )
    result = beam_pipeline.build(beam.Pipeline(options=options), job).run()
    translated = result.job  # type: ignore[attr-defined]  # what the service would get
    names = {t.unique_name for t in translated.proto_pipeline.components.transforms.values()}
    for step in (
        "ListedInputs",
        "NumberSplits/CountNewlines",
        "NumberSplits/GroupByInput",
        "HashInputs/HashContent",
        "DecideInputs/DecideFromLedger",
        "ParseCommands/CheckLines",
        "ApplyCommands/GroupByBucket",
        "ApplyCommands/ApplyToBucket",
        "WriteRejects/WriteRejectFiles",
        "CommitImport/CheckAndCommit",
    ):
        assert step in names, step
    submitted = translated.options.get_all_options()
    assert submitted["project"] == "profile-import-test"
    assert submitted["sdk_container_image"].endswith("profile-import:1")
    assert translated.proto.name == "profile-import-e1"


def test_a_folder_store_is_refused_for_dataflow_before_anything_runs(tmp_path: Path) -> None:
    src = tmp_path / "a.ndjson"
    src.write_text("{}\n")
    result = run_cli(
        "run",
        "--store",
        tmp_path / "s",
        "--runner=DataflowRunner",
        "--project=profile-import-test",
        src,
        beam=(),
    )
    assert result.returncode == 2
    assert "is on this machine, where its workers cannot write" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "s").exists()


def test_a_launch_that_does_not_wait_completes_the_import(tmp_path: Path) -> None:
    """What a Flex Template does: submit and return; the job's final step
    publishes and writes the report with nobody waiting (on the portable
    runner, whose loopback workers are threads of this process)."""
    src = write_lines(
        tmp_path / "a.ndjson",
        [upsert({"email_hash": "h"}, {"v": 1}), "{oops", upsert({"email_hash": "g"}, {})],
    )
    store, report, rejects = tmp_path / "store", tmp_path / "report.json", tmp_path / "r.ndjson"
    status = launch.main(
        [
            f"--inputs={src}",
            f"--store={store}",
            f"--report={report}",
            f"--rejects={rejects}",
            *PORTABLE,
        ]
    )
    assert status == 0
    deadline = time.monotonic() + 120
    while not report.exists():  # written whole, by the job's final step
        assert time.monotonic() < deadline, "the job never wrote its report"
        time.sleep(0.2)
    final = json.loads(report.read_text())
    assert final["status"] == "SUCCEEDED_WITH_ERRORS" and final["version"] == 1
    assert final["counts"]["accepted"] == 2 and final["rejects_file"] == str(rejects)
    assert [r["line"] for r in read_ndjson(rejects)] == [2]
    assert {p["email_hash"] for p in export(store)} == {"g", "h"}


IN_BUCKET = "gs://profile-import-test/in/a.ndjson"  # never read: refused before


@pytest.mark.parametrize(
    ("store", "options", "reason"),
    [
        (
            "sqlite:///{tmp}/p.db",
            [IN_BUCKET],
            "the store sqlite:///{tmp}/p.db is on this machine, where its workers cannot write; "
            "use a store in a bucket (s3://, gs://) or a PostgreSQL database, or the local runner",
        ),
        (
            "{tmp}/store",
            [IN_BUCKET],
            "the store {tmp}/store is on this machine, where its workers cannot write",
        ),
        (
            "postgresql:///postgres?table=t",
            [IN_BUCKET],
            "a PostgreSQL store keeps its run's work folder under --temp_location, which must "
            "be an s3:// or gs:// URL",
        ),
        (
            "postgresql:///postgres?table=t",
            ["--temp_location={tmp}/temp", IN_BUCKET],
            "under --temp_location, which must be an s3:// or gs:// URL",
        ),
    ],
)
def test_workers_elsewhere_need_everything_where_they_reach_it(
    tmp_path: Path, store: str, options: list[str], reason: str
) -> None:
    """Refused in one line before anything runs (no store, bucket or server is touched)."""
    write_lines(tmp_path / "a.ndjson", [upsert({"email_hash": "h"}, {})])
    args = [a.replace("{tmp}", str(tmp_path)) for a in ["--store", store, *options]]
    result = run_cli("run", *args, "--runner=DataflowRunner", "--project=profile-import-test")
    assert result.returncode == 2, result.stderr
    assert reason.replace("{tmp}", str(tmp_path)) in message_lines(result.stderr)[-1]
    # No store was created.
    assert {p.name for p in tmp_path.iterdir()} == {"a.ndjson"}


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            ["--inputs={tmp}/a.ndjson"],
            "the input {tmp}/a.ndjson is on this machine, where the workers of a job nobody "
            "waits for cannot read it; put it in a bucket (s3://, gs://)",
        ),
        (
            ["--report={tmp}/r.json", "--rejects=gs://profile-import-test/r.ndjson"],
            "--report must be an s3:// or gs:// URL, where the final step of a job nobody "
            "waits for can write it",
        ),
        (["--report=gs://profile-import-test/r.json"], "--rejects must be an s3:// or gs:// URL"),
    ],
)
def test_a_launch_that_does_not_wait_needs_its_inputs_and_outputs_in_a_bucket(
    tmp_path: Path, options: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A waiting command stages local inputs and writes local outputs itself
    (the cluster tests show it); a job nobody waits for has only its workers."""
    given = [o.replace("{tmp}", str(tmp_path)) for o in options]
    status = launch.main(
        [
            *([] if any(o.startswith("--inputs") for o in given) else [f"--inputs={IN_BUCKET}"]),
            "--store=gs://profile-import-test/store",
            *given,
            "--runner=DataflowRunner",
            "--project=profile-import-test",
        ]
    )
    assert status == 2
    assert reason.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


DOCKERFILE = TEMPLATE / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _dockerignore_excludes(path: str) -> bool:
    """Whether the repository's .dockerignore keeps `path` out of the build
    context, as Docker reads it: the last matching pattern wins, a pattern
    matches a path or any folder above it, `**` any number of folders."""

    def matches(pattern: list[str], parts: list[str]) -> bool:
        if not pattern:
            return not parts
        if pattern[0] == "**":
            return any(matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
        return (
            bool(parts)
            and fnmatch.fnmatchcase(parts[0], pattern[0])
            and (matches(pattern[1:], parts[1:]))
        )

    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    excluded = False
    parts = path.split("/")
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/").split("/")
        if any(matches(pattern, parts[:n]) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_the_dockerfile_refers_to_what_exists_and_pins_its_bases() -> None:
    """Docker cannot run here: the image's recipe is checked against the repository."""
    instructions = dockerfile_instructions()
    stages = [args.split()[-1] for op, args in instructions if op == "FROM" and " AS " in args]
    for op, args in instructions:
        if op == "FROM":
            image = args.split()[0]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag and tag not in ("", "latest"), image
    copies = [args.split() for op, args in instructions if op == "COPY"]
    context_copies = [c for c in copies if not c[0].startswith("--from=")]
    assert all(f"--from={stages[0]}" in c for c in copies if c[0].startswith("--from="))
    destinations = {}
    for *sources, destination in context_copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            destinations[destination.rstrip("/")] = ROOT / source
    # The launcher file the template runs is one of the repository's, copied.
    (py_file,) = [
        args.split("=", 1)[1]
        for op, args in instructions
        if op == "ENV" and args.startswith("FLEX_TEMPLATE_PYTHON_PY_FILE=")
    ]
    copied_to, copied_from = next(
        (d, s) for d, s in destinations.items() if py_file.startswith(f"{d}/")
    )
    launcher = copied_from / py_file.removeprefix(f"{copied_to}/")
    assert launcher == TEMPLATE / "launch.py" and launcher.is_file()
    # What it installs: the copied package with extras pyproject declares, the
    # extras of every documented store; Beam at the version of the SDK image.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = set(pyproject["project"]["optional-dependencies"])
    (install,) = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    (extras,) = re.findall(rf"'{copied_to}\[([^\]]+)\]'", install)
    assert set(extras.split(",")) <= declared
    assert {"gcp", "s3", "postgresql"} <= set(extras.split(","))
    sdk_versions = [
        args.split(":")[-1] for op, args in instructions if op == "FROM" and "beam_python" in args
    ]
    assert re.findall(r"apache-beam\[gcp\]==([\w.]+)", install) == sdk_versions


def test_the_docker_context_holds_the_package_and_nothing_else() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = ["pyproject.toml", "setup.py", "README.md", "runners/dataflow/launch.py"]
    for folder in pyproject["tool"]["setuptools"]["package-dir"].values():
        needed += [
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
    assert [p for p in needed if _dockerignore_excludes(p)] == []
    for unwanted in (
        ".venv/bin/python",
        ".git/HEAD",
        "profile-store/CURRENT",
        "bench/out/run.json",
        "tests/engines/test_dataflow.py",
        "core/__pycache__/fold.cpython-311.pyc",
        "build/typecheck/x.py",
        ".mypy_cache/x.json",
        "example-report.json",
    ):
        assert _dockerignore_excludes(unwanted), unwanted


def _objects(bucket: str) -> dict[str, bytes]:
    from google.cloud import storage  # type: ignore[attr-defined]

    client = storage.Client(project="test")
    return {b.name: b.download_as_bytes() for b in client.list_blobs(bucket)}


DRY_RUN = (
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=profile-import-test",
    "--region=europe-west1",
)


@pytest.mark.parametrize("store_exists", [False, True], ids=["new-store", "existing-store"])
def test_a_dataflow_dry_run_builds_the_job_and_leaves_nothing_behind(
    gcs_endpoint: str, tmp_path: Path, store_exists: bool
) -> None:
    """Dataflow's `--dry_run=True` builds and translates the job, says in one
    line that it did only that, and writes nothing: no report placeholder, no
    rejects file, nothing staged in the store."""
    bucket = new_bucket("gs")
    store = f"gs://{bucket}/store"
    put(f"gs://{bucket}/in/a.ndjson", b'{"operation": "UPSERT", "email_hash": "h"}\n{oops\n')
    if store_exists:
        seed = write_lines(tmp_path / "seed.ndjson", [upsert({"email_hash": "g"}, {})])
        assert run_cli("run", "--store", store, "--report", os.devnull, seed).returncode == 0
    before = _objects(bucket)
    result = run_cli(
        "run",
        "--store",
        store,
        "--report",
        f"gs://{bucket}/report.json",
        "--rejects",
        f"gs://{bucket}/rejects.ndjson",
        *DRY_RUN,
        f"--temp_location=gs://{bucket}/tmp",
        f"gs://{bucket}/in/a.ndjson",
        beam=(),
    )
    assert result.returncode == 0, result.stderr
    summary = message_lines(result.stderr)
    assert len(summary) == 1 and summary[0].startswith("profile-import: DRY RUN: "), summary
    assert "was built" in summary[0] and "not submitted" in summary[0]
    assert "SUBMITTED" not in result.stderr and result.stdout == ""
    assert _objects(bucket) == before

    # The Flex Template's launcher, as the template runs it.
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "profile_import.runners.dataflow.launch",
            f"--inputs=gs://{bucket}/in/a.ndjson",
            f"--store={store}",
            f"--report=gs://{bucket}/report.json",
            f"--rejects=gs://{bucket}/rejects.ndjson",
            *DRY_RUN,
            f"--temp_location=gs://{bucket}/tmp",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert launched.returncode == 0, launched.stderr
    assert "DRY RUN: " in launched.stderr and "not submitted" in launched.stderr
    assert "SUBMITTED" not in launched.stderr and "publishes" not in launched.stderr
    assert _objects(bucket) == before


def test_a_dataflow_dry_run_on_postgresql_stages_nothing_on_the_server(
    postgres: str, gcs_endpoint: str, tmp_path: Path
) -> None:
    """The launch of a PostgreSQL store's job builds it (its work folder under
    --temp_location) and creates nothing on the server: no table, no staged run."""
    import psycopg

    bucket = f"gs://{new_bucket('gs')}"
    table = f"t_dataflow_{uuid.uuid4().hex[:8]}"
    put(f"{bucket}/in/a.ndjson", b'{"operation": "DELETE", "email_hash": "h"}\n')
    settings = RunSettings(
        inputs=[f"{bucket}/in/a.ndjson"],
        store=f"postgresql:///{postgres}?table={table}",
        report_path=f"{bucket}/report.json",
        rejects_path=f"{bucket}/rejects.ndjson",
        beam_args=[*DRY_RUN, f"--temp_location={bucket}/tmp/"],
        wait=False,
    )
    execution = Execution(settings)
    outcome = execution.run()
    assert outcome.exit_code == 0 and outcome.report["status"] == "DRY_RUN", outcome.report
    assert outcome.report["message"].startswith("DRY RUN: ") and outcome.report_written
    assert execution.work_root == f"{bucket}/tmp/profile-import"
    assert list(_objects(bucket.removeprefix("gs://"))) == ["in/a.ndjson"]
    with psycopg.connect(f"dbname={postgres}") as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s", (f"{table}%",)
        ).fetchone()
    assert tables == (0,)
