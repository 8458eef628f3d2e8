"""One execution of an import, from the command line's settings to its report.

    plan inputs ─► prove the outputs writable ─► lock the store
        ─► skip the inputs it already applied ─► stage ─► run the pipeline
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
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import apache_beam as beam
import orjson
import smart_open
from apache_beam.metrics.metric import MetricsFilter

from profile_import.core import clock, idempotency
from profile_import.core import rejects as reject_records
from profile_import.core import report as reports
from profile_import.core.codes import RejectCode
from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES, CheckSettings
from profile_import.core.properties import DeclarationError, Declarations
from profile_import.core.report import Status
from profile_import.core.validation import InvalidSchema, SchemaValidator
from profile_import.inputs import plan as input_plan
from profile_import.pipelines import import_profiles
from profile_import.stores import ProfileStore, StoreError, open_store
from profile_import.stores.base import BucketSource, Staging, Version
from profile_import.transforms import metrics, progress

from . import local, outputs
from .outputs import Output, OutputError

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
    # --properties-file and --allow-undeclared-properties (core.properties)
    properties_path: str | None = None
    allow_undeclared_properties: bool = False
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
        SchemaValidator(schema)
    except InvalidSchema as e:
        raise UsageError(f"--profile-schema {path}: {e}") from e
    return schema, hashlib.sha256(data).hexdigest()  # type: ignore[return-value]


def _load_declarations(path: str | None, allow_undeclared: bool) -> Declarations | None:
    if path is None:
        if allow_undeclared:
            raise UsageError("--allow-undeclared-properties needs --properties-file")
        return None
    try:
        with smart_open.open(path, "rb") as f:
            data = f.read()
        return Declarations.from_json(data, allow_undeclared=allow_undeclared)
    except OSError as e:
        raise UsageError(f"--properties-file {path}: cannot be read: {e}") from e
    except DeclarationError as e:
        raise UsageError(f"--properties-file {path}: {e}") from e


def _counters(result: Any) -> dict[str, int]:
    values: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        values[name] = values.get(name, 0) + int(value or 0)
    return values


def _gather_rejects(
    rejects_dir: str, target: Output, default: str
) -> tuple[str | None, int, list[str]]:
    """Concatenates the per-split reject files in input order into the rejects file.

    Returns (where the rejects are or None, rejects written, the first ones
    as summaries). With no location asked, the rejects go to `default`, a file
    written only if there are rejects.
    """
    names = (
        sorted(n for n in os.listdir(rejects_dir) if n.endswith(".ndjson"))
        if os.path.isdir(rejects_dir)
        else []
    )
    if target.location is None:
        if not names:
            return None, 0, []
        target = Output(target.option, default)
    written = 0
    first: list[str] = []
    with target.open() as out:
        for name in names:
            with open(os.path.join(rejects_dir, name), "rb") as f:
                for line in f:
                    out.write(line)
                    written += 1
                    if len(first) < FIRST_ERRORS:
                        first.append(reject_records.summary(orjson.loads(line)))
    return str(target), written, first


@contextlib.contextmanager
def _progress_display(
    enabled: bool, progress_dir: str | None, total_lines: int, stream: TextIO
) -> Iterator[None]:
    """While the pipeline runs, shows lines read and lines/s on a terminal."""
    if not enabled or progress_dir is None:
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def show() -> None:
        while not stop.wait(1.0):
            _, lines = progress.read(progress_dir, "read-")
            buckets, _ = progress.read(progress_dir, "apply-")
            elapsed = time.monotonic() - started
            rate = lines / elapsed if elapsed else 0.0
            stream.write(
                f"\rread {lines:,}/{total_lines:,} lines ({rate:,.0f} lines/s), "
                f"applied {buckets:,} buckets "
            )
            stream.flush()

    thread = threading.Thread(target=show, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        stream.write("\r\033[K")
        stream.flush()


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
        self.decisions: list[idempotency.InputDecision] = []
        self.fingerprint: str | None = None
        self.report_output = Output("--report", settings.report_path or outputs.STDOUT)
        self.rejects_output = Output("--rejects", settings.rejects_path)

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
            inputs=self._input_entries(),
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

    def _input_entries(self) -> list[dict[str, Any]]:
        decided = {d.index: d for d in self.decisions}
        entries = []
        for f in self.inputs:
            entry: dict[str, Any] = {
                "path": f.path,
                "sha256": f.sha256,
                "bytes": f.size,
                "lines": f.lines,
                "compression": f.compression,
            }
            decision = decided.get(f.index)
            if decision is not None:
                entry["fingerprint"] = decision.fingerprint
                entry["applied"] = decision.applies
                if decision.applied_by is not None:
                    entry["skipped"] = decision.skipped
                    entry["applied_by"] = _applied_by(decision.applied_by)
                elif decision.duplicate_of is not None:
                    entry["skipped"] = decision.skipped
                    entry["duplicate_of"] = self.inputs[decision.duplicate_of].path
            entries.append(entry)
        return entries

    def _skipped_note(self) -> str | None:
        """`skipped 2 inputs applied before: a.ndjson (execution X, version 3), ...`."""
        parts = []
        for d in self.decisions:
            path = self.inputs[d.index].path
            if d.applied_by is not None:
                by = d.applied_by
                parts.append(f"{path} (by execution {by.execution_id}, version {by.version})")
            elif d.duplicate_of is not None:
                parts.append(f"{path} (same content as {self.inputs[d.duplicate_of].path})")
        if not parts:
            return None
        shown = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
        return f"skipped {len(parts)} input(s) applied before: {shown}"

    # --- the run ------------------------------------------------------------

    def _usage_error(self, error: Exception) -> Outcome:
        message = f"{Status.FAILED}: {error}; nothing ran, the store is unchanged"
        report = self._report(
            Status.FAILED, reports.empty_counts(), failure=str(error), message=message
        )
        return Outcome(report, 2)

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
        if self.rejects_output.is_stdout and self.report_output.is_stdout:
            raise UsageError(
                "--rejects -: standard output already carries the report; give --report FILE"
            )

    def run(self) -> Outcome:
        spool = None
        try:
            if input_plan.STDIN in self.settings.inputs:
                spool = tempfile.mkdtemp(prefix="profile-import-stdin-")
            return self._run(spool)
        finally:
            if spool is not None:
                shutil.rmtree(spool, ignore_errors=True)

    def _run(self, spool: str | None) -> Outcome:
        s = self.settings
        try:
            self._check_usage()
            profile_schema, profile_schema_sha = _load_profile_schema(s.profile_schema_path)
            declarations = _load_declarations(s.properties_path, s.allow_undeclared_properties)
            paths = input_plan.expand(s.inputs)
            sources = {}
            if spool is not None:
                sources[input_plan.STDIN] = input_plan.spool_stdin(sys.stdin.buffer, spool)
            self.inputs, splits = input_plan.plan(paths, split_bytes=s.split_bytes, sources=sources)
            store = open_store(s.store, buckets=s.buckets)
            placeholder = json.dumps(
                {"execution_id": self.execution_id, "status": "RUNNING", "store": s.store}
            )
            self.report_output.check(placeholder.encode() + b"\n")
            self.rejects_output.check(b"")
        except (UsageError, input_plan.InputError, StoreError, OutputError) as e:
            return self._usage_error(e)
        check = CheckSettings(
            default_compartment_id=s.default_compartment_id,
            profile_schema=profile_schema,
            max_line_bytes=s.max_line_bytes,
            redact=s.redact_rejects,
            declarations=declarations,
        )
        # What makes a line mean what it means, beside its content (SPEC §4).
        semantics = {
            "default_compartment_id": s.default_compartment_id,
            "profile_schema": profile_schema_sha,
            "max_line_bytes": s.max_line_bytes,
            # Only when given, so the fingerprints of runs without it do not change.
            **({"properties": declarations.fingerprint()} if declarations else {}),
        }
        fingerprints = [idempotency.input_fingerprint(f.sha256, semantics) for f in self.inputs]
        try:
            if s.dry_run:
                return self._run_planned(store, splits, check, fingerprints)
            with store.lock(s.lock_timeout):
                # The execution starts when it holds the store, so the times it
                # stamps on profiles follow the order in which runs publish.
                self.started = clock.now()
                return self._run_planned(store, splits, check, fingerprints)
        except (StoreError, OSError) as e:
            failure = str(e) if isinstance(e, StoreError) else f"store {s.store}: {e}"
            return Outcome(self._report(Status.FAILED, reports.empty_counts(), failure=failure), 1)

    def _run_planned(
        self,
        store: ProfileStore,
        splits: list[input_plan.InputSplit],
        check: CheckSettings,
        fingerprints: list[str],
    ) -> Outcome:
        s = self.settings
        parent = store.current() if store.exists() else None
        ledger = store.applied_inputs(parent, fingerprints)
        self.decisions = idempotency.decide(fingerprints, ledger, allow_reapply=s.allow_reapply)
        applying = [d for d in self.decisions if d.applies]
        self.fingerprint = idempotency.execution_fingerprint([d.fingerprint for d in applying])
        if not applying:
            message = (
                f"{Status.ALREADY_APPLIED}: every input was applied before; nothing changed "
                f"({self._skipped_note()}). Pass --allow-reapply to apply them again"
            )
            report = self._report(
                Status.ALREADY_APPLIED,
                reports.empty_counts(),
                message=message,
                version=parent.number if parent else None,
                parent_version=parent.number if parent else None,
                already_applied=self._already_applied(),
            )
            return Outcome(report, 0)
        applied_inputs = {d.index for d in applying}
        splits = [split for split in splits if split.input_index in applied_inputs]
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
            with _progress_display(
                show, job.progress_dir, sum(f.lines for f in self._applying()), self.stderr
            ):
                result = pipeline.run()
                result.wait_until_finish()
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
            rejects_path, rejects_written, first_errors = _gather_rejects(
                job.rejects_dir,
                self.rejects_output,
                f"profile-import-{self.execution_id}.rejects.ndjson",
            )
        except Exception as e:  # noqa: BLE001 - a remote client's errors too
            unwritable = f"cannot write the rejects to {self.rejects_output}: {e}"
            report = self._report(
                Status.FAILED, counts, rejects_by_code=rejects_by_code, failure=unwritable
            )
            return Outcome(report, 1)

        # Nothing is lost: every line planned was read, every accepted command
        # applied, every reject written. A mismatch is a bug, never published.
        problems = reports.count_problems(counts, rejects_by_code)
        for file in self._applying():
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
                "inputs": [
                    {"path": f.path, "sha256": f.sha256, "fingerprint": d.fingerprint}
                    for f, d in zip(self.inputs, self.decisions, strict=True)
                    if d.applies
                ],
                "counts": counts,
            }
            delta = counts["profiles_created"] - counts["profiles_deleted"]
            written = values.get(metrics.BUCKETS_WRITTEN, 0)
            fingerprints = [d.fingerprint for d in self.decisions if d.applies]
            try:
                version = store.commit(staging, execution, delta, written, fingerprints).number
            except StoreError as e:
                failure, status = str(e), Status.FAILED
        skipped = self._skipped_note()
        if skipped is not None:
            extra["already_applied"] = self._already_applied()
        report = self._report(
            status,
            counts,
            rejects_by_code=rejects_by_code,
            failure=failure,
            first_errors=first_errors,
            version=version,
            message=reports.summary_message(
                status,
                counts,
                failure=failure,
                version=version,
                dry_run=s.dry_run,
                note=skipped,
            ),
            **extra,
        )
        return Outcome(report, 1 if status is Status.FAILED else 0)

    def _applying(self) -> list[input_plan.InputFile]:
        applies = {d.index for d in self.decisions if d.applies}
        return [f for f in self.inputs if f.index in applies]

    def _already_applied(self) -> list[dict[str, Any]]:
        return [
            {"path": self.inputs[d.index].path, **_applied_by(d.applied_by)}
            for d in self.decisions
            if d.applied_by is not None
        ]


def _applied_by(applied: idempotency.AppliedInput) -> dict[str, Any]:
    return {
        "execution_id": applied.execution_id,
        "version": applied.version,
        "finished_at": applied.finished_at,
    }


def _root_message(error: BaseException) -> str:
    """The innermost cause of a pipeline failure, in one line."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    # Beam wraps worker errors in long traces; keep the last meaningful line.
    meaningful = [line for line in text if line.strip() and not line.startswith(" ")]
    return (meaningful[-1] if meaningful else type(seen).__name__)[:500]
