"""One execution of an import, from the command line's settings to its report.

    plan inputs ─► lock the store ─► already applied? ─► stage ─► run the pipeline
        ─► gather counts and rejects ─► check them and the reject limits
        ─► commit (publish a new version) or abort ─► report

Everything the store shows changes in the commit, or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, TextIO

import apache_beam as beam
import orjson
import smart_open
from apache_beam.metrics.metric import MetricsFilter

from profile_import.core import clock
from profile_import.core import rejects as reject_records
from profile_import.core import report as reports
from profile_import.core.codes import RejectCode
from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES, CheckSettings
from profile_import.core.report import Status
from profile_import.core.validation import InvalidSchema, SchemaValidator
from profile_import.inputs import plan as input_plan
from profile_import.pipelines import import_profiles
from profile_import.stores import ProfileStore, StoreError, open_store
from profile_import.stores.base import BucketSource, Staging, Version
from profile_import.transforms import metrics

from . import local, logs, progress_display

FIRST_ERRORS = 20


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2, nothing ran."""


@dataclass
class RunSettings:
    inputs: list[str]
    store: str
    rejects_path: str | None = None
    report_path: str | None = None
    default_compartment_id: str | None = None
    max_rejects: int | None = None
    max_reject_ratio: float | None = None
    allow_reapply: bool = False
    redact_rejects: bool = False
    profile_schema_path: str | None = None
    dry_run: bool = False
    lock_timeout: float = 0.0
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    split_bytes: int = input_plan.DEFAULT_SPLIT_BYTES
    buckets: int | None = None
    show_progress: bool = False
    beam_args: list[str] = field(default_factory=list)
    # Shuffle batches through files (transforms.batches); None: on the local runner only.
    spill: bool | None = None


@dataclass
class Outcome:
    report: dict[str, Any]
    exit_code: int


def new_execution_id(started: Any) -> str:
    return f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _load_profile_schema(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, None
    try:
        with smart_open.open(path, "rb") as f:
            data = f.read()
        schema = orjson.loads(data)
    except (OSError, orjson.JSONDecodeError) as e:
        raise UsageError(f"--profile-schema {path}: cannot be read as JSON: {e}") from e
    if not isinstance(schema, dict | bool):
        raise UsageError(f"--profile-schema {path}: a JSON Schema is an object")
    try:
        SchemaValidator(schema).check_usable()  # type: ignore[arg-type]
    except InvalidSchema as e:
        raise UsageError(f"--profile-schema {path}: {e}") from e
    return schema, hashlib.sha256(data).hexdigest()  # type: ignore[return-value]


def _check_writable(option: str, path: str | None) -> None:
    """An output file must be writable before anything runs: a report that
    cannot be written after the store was changed would hide a published run."""
    if path is None or input_plan.is_remote(path):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write in {folder}")


def fingerprint(inputs: list[input_plan.InputFile], semantics: dict[str, Any]) -> str:
    """What makes two executions the same: input content and the options that
    change what a line means. Paths and names do not count."""
    doc = {"inputs": [f.sha256 for f in inputs], **semantics}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _counters(result: Any) -> dict[str, int]:
    values: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        values[name] = values.get(name, 0) + int(value or 0)
    return values


def _gather_rejects(
    rejects_dir: str, target: str | None, execution_id: str
) -> tuple[str | None, int, list[str]]:
    """Concatenates the per-split reject files in input order into the rejects file.

    Returns (rejects file or None, rejects written, the first ones as summaries).
    """
    names = (
        sorted(n for n in os.listdir(rejects_dir) if n.endswith(".ndjson"))
        if os.path.isdir(rejects_dir)
        else []
    )
    if not names and target is None:
        return None, 0, []
    path = target or f"profile-import-{execution_id}.rejects.ndjson"
    written = 0
    first: list[str] = []
    with smart_open.open(path, "wb") as out:
        for name in names:
            with open(os.path.join(rejects_dir, name), "rb") as f:
                for line in f:
                    out.write(line)
                    written += 1
                    if len(first) < FIRST_ERRORS:
                        first.append(reject_records.summary(orjson.loads(line)))
    return path, written, first


class Execution:
    """One run of `profile-import run`."""

    def __init__(self, settings: RunSettings, stderr: TextIO = sys.stderr) -> None:
        self.settings = settings
        self.stderr = stderr
        # `launched`: when the command started (planning included), for the
        # duration; `started`: the execution's start, stamped on profiles.
        self.launched = self.started = clock.now()
        self.execution_id = new_execution_id(self.started)
        self.options = local.pipeline_options(settings.beam_args)
        self.runner = local.runner_name(self.options)
        self.inputs: list[input_plan.InputFile] = []
        self.fingerprint: str | None = None

    # --- the report ---------------------------------------------------------

    def _report(
        self,
        status: Status,
        counts: dict[str, int],
        *,
        rejects_by_code: dict[str, int] | None = None,
        failure: str | None = None,
        first_errors: list[str] | None = None,
        version: int | None = None,
        message: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        finished = clock.now()
        extra.setdefault("rejects_file", None)
        extra.setdefault("parent_version", None)
        return reports.build(
            execution_id=self.execution_id,
            status=status,
            counts=counts,
            rejects_by_code=rejects_by_code or {},
            inputs=[
                {
                    "path": f.path,
                    "sha256": f.sha256,
                    "bytes": f.size,
                    "lines": f.lines,
                    "compression": f.compression,
                }
                for f in self.inputs
            ],
            started_at=clock.iso(self.started),
            finished_at=clock.iso(finished),
            runner=self.runner,
            store=self.settings.store,
            message=message
            or reports.summary_message(
                status, counts, failure=failure, version=version, dry_run=self.settings.dry_run
            ),
            first_errors=first_errors or [],
            workers=local.workers(self.options) if local.is_local(self.options) else None,
            dry_run=self.settings.dry_run,
            fingerprint=self.fingerprint,
            version=version,
            launched_at=clock.iso(self.launched),
            duration_seconds=round((finished - self.launched).total_seconds(), 3),
            failure=failure,
            **extra,
        )

    # --- the run ------------------------------------------------------------

    def _usage_error(self, error: Exception) -> Outcome:
        return Outcome(self._report(Status.FAILED, reports.empty_counts(), failure=str(error)), 2)

    def _check_usage(self) -> None:
        s = self.settings
        unknown = local.unknown_options(s.beam_args)
        if unknown:
            raise UsageError(f"unknown option(s): {' '.join(unknown)} (see --help)")
        if not local.is_local(self.options):
            # The folder store lives on this machine: workers elsewhere could not
            # write it, and a publish would miss their buckets.
            raise UsageError(
                f"--runner={self.runner}: the folder store {s.store} can only be written by "
                "the local runner"
            )
        _check_writable("--rejects", s.rejects_path)
        _check_writable("--report", s.report_path)

    def run(self) -> Outcome:
        s = self.settings
        try:
            self._check_usage()
            profile_schema, profile_schema_sha = _load_profile_schema(s.profile_schema_path)
            with logs.phase("planning inputs") as end:
                paths = input_plan.expand(s.inputs)
                self.inputs, splits = input_plan.plan(paths, split_bytes=s.split_bytes)
                lines = sum(f.lines for f in self.inputs)
                end["detail"] = f"{len(self.inputs)} input(s), {lines:,} lines"
            store = open_store(s.store, buckets=s.buckets)
        except (UsageError, input_plan.InputError, StoreError) as e:
            return self._usage_error(e)
        check = CheckSettings(
            default_compartment_id=s.default_compartment_id,
            profile_schema=profile_schema,
            max_line_bytes=s.max_line_bytes,
            redact=s.redact_rejects,
        )
        self.fingerprint = fingerprint(
            self.inputs,
            {
                "default_compartment_id": s.default_compartment_id,
                "profile_schema": profile_schema_sha,
                "max_line_bytes": s.max_line_bytes,
            },
        )
        try:
            if s.dry_run:
                return self._run_planned(store, splits, check)
            with contextlib.ExitStack() as held:
                with logs.phase("waiting for the store lock"):
                    held.enter_context(store.lock(s.lock_timeout))
                # The execution starts when it holds the store, so the times it
                # stamps on profiles follow the order in which runs publish.
                self.started = clock.now()
                return self._run_planned(store, splits, check)
        except (StoreError, OSError) as e:
            failure = str(e) if isinstance(e, StoreError) else f"store {s.store}: {e}"
            return Outcome(self._report(Status.FAILED, reports.empty_counts(), failure=failure), 1)

    def _pipeline_detail(self) -> str:
        if local.is_local(self.options):
            return f"{self.runner}, {local.workers(self.options)} worker(s)"
        return self.runner

    def _run_planned(
        self, store: ProfileStore, splits: list[input_plan.InputSplit], check: CheckSettings
    ) -> Outcome:
        s = self.settings
        assert self.fingerprint is not None
        parent = store.current() if store.exists() else None
        applied = parent.find_applied(self.fingerprint) if parent else None
        if applied is not None and not s.allow_reapply:
            message = (
                f"{Status.ALREADY_APPLIED}: the same input was applied by execution "
                f"{applied.execution_id} (store version {applied.version}, "
                f"{applied.finished_at}); nothing changed. Pass --allow-reapply to apply it again"
            )
            report = self._report(
                Status.ALREADY_APPLIED,
                reports.empty_counts(),
                message=message,
                version=parent.number if parent else None,
                parent_version=parent.number if parent else None,
                already_applied=applied.__dict__,
            )
            return Outcome(report, 0)
        if s.dry_run:
            work_dir = tempfile.mkdtemp(prefix="profile-import-")
            try:
                return self._execute(store, splits, check, parent, store.source(parent), work_dir)
            finally:
                shutil.rmtree(work_dir, ignore_errors=True)
        staging = store.begin(self.execution_id, parent)
        published = False
        try:
            outcome = self._execute(
                store, splits, check, parent, staging.source, staging.work_dir, staging
            )
            published = outcome.report["version"] is not None
            return outcome
        finally:
            if not published:
                store.abort(staging)

    def _execute(
        self,
        store: ProfileStore,
        splits: list[input_plan.InputSplit],
        check: CheckSettings,
        parent: Version | None,
        source: BucketSource,
        work_dir: str,
        staging: Staging | None = None,
    ) -> Outcome:
        """Runs the pipeline and publishes its result into `staging` (None: a dry run)."""
        s = self.settings
        show = s.show_progress and local.is_local(self.options)
        job = import_profiles.ImportJob(
            splits=splits,
            input_count=len(self.inputs),
            check=check,
            buckets=store.buckets,
            source=source,
            sink=staging.sink if staging is not None else None,
            now=clock.iso(self.started),
            work_dir=work_dir,
            progress=show,
            spill=local.is_local(self.options) if s.spill is None else s.spill,
        )
        if job.progress_dir:
            os.makedirs(job.progress_dir, exist_ok=True)
        try:
            runner = local.create_runner(self.options, self.settings.beam_args)
            pipeline = import_profiles.build(beam.Pipeline(runner, options=self.options), job)
            total_lines = sum(f.lines for f in self.inputs)
            with (
                logs.phase("pipeline", self._pipeline_detail()) as end,
                progress_display.shown(show, job.progress_dir, total_lines, self.stderr),
            ):
                result = pipeline.run()
                result.wait_until_finish()
                end["detail"] = f"{total_lines:,} lines"
            values = _counters(result)
        except Exception as e:  # noqa: BLE001 - any pipeline failure fails the run cleanly
            crash = f"the pipeline failed: {_root_message(e)} (--verbose shows Beam's log)"
            return Outcome(self._report(Status.FAILED, reports.empty_counts(), failure=crash), 1)

        counts = reports.empty_counts()
        for name in counts:
            counts[name] = values.get(name, 0)
        rejects_by_code = {
            str(code): values[metrics.REJECTED_PREFIX + code]
            for code in RejectCode
            if values.get(metrics.REJECTED_PREFIX + code)
        }
        try:
            with logs.phase("gathering rejects") as end:
                rejects_path, rejects_written, first_errors = _gather_rejects(
                    job.rejects_dir, s.rejects_path, self.execution_id
                )
                end["detail"] = f"{rejects_written:,} in {rejects_path}" if rejects_path else "none"
        except OSError as e:
            unwritable = f"cannot write the rejects file: {e}"
            report = self._report(Status.FAILED, reports.empty_counts(), failure=unwritable)
            return Outcome(report, 1)

        # Nothing is lost: every line planned was read, every accepted command
        # applied, every reject written. A mismatch is a bug, never published.
        problems = reports.count_problems(counts, rejects_by_code)
        for file in self.inputs:
            read = values.get(f"{metrics.INPUT_LINES_PREFIX}{file.index}", 0)
            if read != file.lines:
                problems.append(f"{file.path}: {read} lines read of {file.lines}")
        if values.get(metrics.COMMANDS_APPLIED, 0) != counts["accepted"]:
            problems.append("commands applied != accepted")
        if rejects_written != counts["rejected"]:
            problems.append("rejects written != rejected")
        failure: str | None = None
        if problems:
            failure = "internal error, counts do not add up: " + "; ".join(problems)
        else:
            failure = reports.reject_limit_problem(counts, s.max_rejects, s.max_reject_ratio)
        status = reports.status_of(counts, failure)

        version = None
        extra: dict[str, Any] = {
            "rejects_file": rejects_path,
            "parent_version": parent.number if parent else None,
        }
        if status is not Status.FAILED and staging is not None:
            execution = {
                "execution_id": self.execution_id,
                "fingerprint": self.fingerprint,
                "started_at": clock.iso(self.started),
                "status": str(status),
                "inputs": [{"path": f.path, "sha256": f.sha256} for f in self.inputs],
                "counts": counts,
            }
            delta = counts["profiles_created"] - counts["profiles_deleted"]
            written = values.get(metrics.BUCKETS_WRITTEN, 0)
            with logs.phase("publishing") as end:
                version = store.commit(staging, execution, delta, written).number
                end["detail"] = f"store version {version}"
        report = self._report(
            status,
            counts,
            rejects_by_code=rejects_by_code,
            failure=failure,
            first_errors=first_errors,
            version=version,
            **extra,
        )
        return Outcome(report, 1 if status is Status.FAILED else 0)


def _root_message(error: BaseException) -> str:
    """The innermost cause of a pipeline failure, in one line."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    # Beam wraps worker errors in long traces; keep the last meaningful line.
    meaningful = [line for line in text if line.strip() and not line.startswith(" ")]
    return (meaningful[-1] if meaningful else type(seen).__name__)[:500]
