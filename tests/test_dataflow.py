"""Dataflow, offline: the Flex Template declares exactly the options of `run`, and the
job translates for the Dataflow service (`--dry_run`: built whole, never submitted)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from profile_import.core.commands import CheckSettings
from profile_import.inputs.plan import InputFile
from profile_import.pipelines import import_profiles
from profile_import.runners import cli
from profile_import.runners.beam_options import ImportOptions
from profile_import.runners.dataflow import launch
from profile_import.runners.execution import Execution, RunSettings
from profile_import.runners.options import OPTIONS, parse_run_args, template_metadata
from profile_import.stores.snapshot import SnapshotStore
from profile_import.transforms.finalize import Finalizer, RunContext

from .helpers import PORTABLE, export, message_lines, read_ndjson, run_cli, upsert, write_lines
from .object_servers import new_bucket

ROOT = Path(__file__).resolve().parent.parent
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
    job = import_profiles.ImportJob(
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
    result = import_profiles.build(beam.Pipeline(options=options), job).run()
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


@pytest.mark.parametrize(
    ("store", "outputs", "reason"),
    [
        ("sqlite:///{tmp}/p.db", [], "the store sqlite:///{tmp}/p.db is on this machine"),
        (
            "postgresql:///postgres?table=t",
            [],
            "a PostgreSQL store keeps its run's work folder under --temp_location, which must "
            "be an s3:// or gs:// URL (got none)",
        ),
        (
            "postgresql:///postgres?table=t",
            ["--temp_location={tmp}/temp"],
            "under --temp_location, which must be an s3:// or gs:// URL (got {tmp}/temp)",
        ),
        (
            "gs://profile-import-test/store",
            ["--report", "{tmp}/r.json", "--rejects", "gs://profile-import-test/r.ndjson"],
            "--report must be an s3:// or gs:// URL",
        ),
        (
            "gs://profile-import-test/store",
            ["--report", "gs://profile-import-test/r.json"],
            "--rejects must be an s3:// or gs:// URL",
        ),
    ],
)
def test_workers_elsewhere_need_everything_where_they_reach_it(
    tmp_path: Path, store: str, outputs: list[str], reason: str
) -> None:
    """Refused in one line before anything runs (no store, bucket or server is touched)."""
    src = write_lines(tmp_path / "a.ndjson", [upsert({"email_hash": "h"}, {})])
    args = [a.replace("{tmp}", str(tmp_path)) for a in ["--store", store, *outputs]]
    result = run_cli(
        "run", *args, "--runner=DataflowRunner", "--project=profile-import-test", src, beam=()
    )
    assert result.returncode == 2, result.stderr
    assert reason.replace("{tmp}", str(tmp_path)) in message_lines(result.stderr)[-1]
    # No store was created; only the report of the refusal where it was asked.
    assert {p.name for p in tmp_path.iterdir()} <= {"a.ndjson", "r.json"}


def test_a_postgresql_store_runs_on_dataflow_with_its_work_under_temp_location(
    postgres: str, gcs_endpoint: str, tmp_path: Path
) -> None:
    """PostgreSQL is reachable from workers anywhere: the launch stages the run
    on the server, puts its work folder under --temp_location and builds the
    job for Dataflow (`--dry_run`: translated whole, never submitted)."""
    bucket = f"gs://{new_bucket('gs')}"
    src = write_lines(tmp_path / "a.ndjson", [upsert({"email_hash": "h"}, {})])
    settings = RunSettings(
        inputs=[str(src)],
        store=f"postgresql:///{postgres}?table=t_dataflow_{uuid.uuid4().hex[:8]}",
        report_path=f"{bucket}/report.json",
        rejects_path=f"{bucket}/rejects.ndjson",
        beam_args=[
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=profile-import-test",
            "--region=europe-west1",
            f"--temp_location={bucket}/tmp/",
        ],
        wait=False,
    )
    execution = Execution(settings)
    outcome = execution.run()
    assert outcome.exit_code == 0 and outcome.report["status"] == "SUBMITTED", outcome.report
    assert execution.work_root == f"{bucket}/tmp/profile-import"
