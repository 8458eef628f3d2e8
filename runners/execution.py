"""One execution of an import, from the command line's settings to its report.

    list inputs ─► prove the outputs writable ─► lock the store (local runs)
        ─► stage the run ─► build the pipeline ─► run it, and wait
        ─► read the report its final step wrote

The launcher reads no input content: the pipeline numbers, fingerprints,
checks, applies, and in its last step (`transforms.commit_import`) checks the counts
and publishes or discards. Waiting, the progress display and the lock are all
that the command line adds to what a job launched with nobody waiting does.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from profile_import.core import clock
from profile_import.core.commands import DEFAULT_MAX_LINE_BYTES, CheckSettings
from profile_import.core.locations import Location, LocationError, is_remote
from profile_import.core.locations import parse as parse_location
from profile_import.core.properties import DeclarationError, Declarations
from profile_import.core.report import Status
from profile_import.core.validation import InvalidSchema, SchemaValidator
from profile_import.inputs import plan as input_plan
from profile_import.pipelines import in_process
from profile_import.pipelines.job import ImportJob, semantics_of
from profile_import.stores import ProfileStore, StoreError, capabilities, open_store
from profile_import.stores.folders import remove_folder
from profile_import.transforms.steps import count_files, outputs, scratch
from profile_import.transforms.steps.decisions import Decided
from profile_import.transforms.steps.finalize import (
    Finalizer,
    RunContext,
    build_report,
    read_counts,
)
from profile_import.transforms.steps.outputs import Output, OutputError

from . import logs, progress_display, runner_choice
from .options import split_inputs

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineResult


# How long a failed pipeline's launcher waits to hear that one of its local
# workers died, which its failure then names.
_DEATH_NOTICE_SECONDS = 2.0


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2, nothing ran."""


@dataclass
class RunSettings:
    inputs: list[str]
    store: str
    rejects_path: str | None = None
    report_path: str | None = None
    changes_path: str | None = None
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
    # False: submit the job and return, as a Flex Template launch does; the
    # job's final step publishes and writes the report with nobody waiting.
    wait: bool = True

    @classmethod
    def from_options(
        cls,
        options: argparse.Namespace,
        beam_args: list[str],
        *,
        inputs: list[str] | None = None,
        wait: bool = True,
        show_progress: bool = False,
    ) -> RunSettings:
        """The settings from `runners.options` (the command line's or a template's)."""
        return cls(
            inputs=inputs if inputs is not None else split_inputs(options.inputs),
            store=options.store,
            rejects_path=options.rejects,
            report_path=options.report,
            changes_path=options.changes,
            default_compartment_id=options.default_compartment_id,
            max_rejects=options.max_rejects,
            max_reject_ratio=options.max_reject_ratio,
            allow_reapply=options.allow_reapply,
            redact_rejects=options.redact_rejects,
            profile_schema_path=options.profile_schema,
            properties_path=options.properties_file,
            allow_undeclared_properties=options.allow_undeclared_properties,
            dry_run=options.import_dry_run,
            lock_timeout=options.lock_timeout,
            max_line_bytes=options.max_line_bytes,
            split_bytes=options.split_bytes,
            buckets=options.buckets,
            show_progress=show_progress,
            beam_args=beam_args,
            wait=wait,
        )

    @cached_property
    def store_location(self) -> Location:
        """The store, parsed once (`core.locations`). Raises `UsageError`."""
        try:
            return parse_location(self.store, "store")
        except LocationError as e:
            raise UsageError(f"store {self.store}: {e}") from e

    def check(self) -> None:
        """Raises UsageError for what must be refused before an Execution is
        built: Beam would print its whole usage for a bad Beam option; a
        location no run can use is refused before anything runs."""
        if self.default_compartment_id is not None and not self.default_compartment_id:
            raise UsageError("--default-compartment-id must not be empty")
        self._check_locations()
        if runner_choice.requested(self.beam_args) is False:
            # Imported only here: Beam takes a second to import, and a small
            # import run in this process never needs it.
            from . import local

            try:
                local.check_options(self.beam_args)
            except local.OptionError as e:
                raise UsageError(str(e)) from e

    def _check_locations(self) -> None:
        """Every location named, parsed by the one parser each role uses."""
        try:
            for pattern in self.inputs:
                if pattern != input_plan.STDIN:
                    input_plan.location_of(pattern)
            for option, location in (
                ("--report", self.report_path),
                ("--rejects", self.rejects_path),
                ("--changes", self.changes_path),
            ):
                outputs.target_of(option, location)
        except (input_plan.InputError, OutputError) as e:
            raise UsageError(str(e)) from e
        self.store_location  # noqa: B018 - parsed here to refuse it now


@dataclass
class RunResult:
    """How a run ended: its report and the command's exit code."""

    report: dict[str, Any]
    exit_code: int
    report_written: bool = False  # to its location by the run's final step

    def error_line(self) -> str:
        """Why the run did not succeed, in one line, cause first (the counts are
        in the report): what the command line prints, what the Python API raises."""
        if self.report.get("changes_error"):  # published, its changes not written
            return str(self.report["changes_error"])
        cause = self.report.get("failure") or self.report["message"]
        unchanged = "; the store is unchanged" if self.exit_code == 1 else ""
        rejects_file = self.report.get("rejects_file")
        return f"{cause}{unchanged}" + (f"; rejects in {rejects_file}" if rejects_file else "")


def new_execution_id(started: Any) -> str:
    return f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _load_profile_schema(path: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, None
    try:
        with input_plan.open_raw(path) as f:
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
        with input_plan.open_raw(path) as f:
            data = f.read()
        return Declarations.from_json(data, allow_undeclared=allow_undeclared)
    except OSError as e:
        raise UsageError(f"--properties-file {path}: cannot be read: {e}") from e
    except DeclarationError as e:
        raise UsageError(f"--properties-file {path}: {e}") from e


class Execution:
    """One run of `profile-import run`."""

    def __init__(self, settings: RunSettings, stderr: TextIO = sys.stderr) -> None:
        self.settings = settings
        self.stderr = stderr
        # `launched`: when the command started, for the duration; `started`:
        # the execution's start, when it holds the store, stamped on profiles.
        self.launched = self.started = clock.now()
        self.execution_id = new_execution_id(self.started)
        # True: this process (`pipelines.in_process`); False: a Beam runner;
        # None: decided by the inputs' size once they are listed.
        self.in_process = runner_choice.requested(settings.beam_args)
        self.runner = self._runner_name()
        self.inputs: list[input_plan.InputFile] = []
        self.report_output = Output("--report", settings.report_path or outputs.STDOUT)
        self.rejects_output = Output("--rejects", settings.rejects_path)
        self.changes_output = Output("--changes", settings.changes_path)
        # Where a database store keeps the run's work folder (None: a local one).
        self.work_root: str | None = None
        # The handover folder holds rejects that could not be brought here.
        self.handover_kept = False
        # What a Beam pipeline stopped by a signal had checked (`interrupted`).
        self.checked_when_stopped: dict[int, dict[str, int]] | None = None

    @cached_property
    def options(self) -> PipelineOptions:
        """The Beam options; Beam is imported only for a run that uses it."""
        from . import local

        return local.pipeline_options(self.settings.beam_args)

    def _runner_name(self) -> str:
        if self.in_process:
            return runner_choice.IN_PROCESS
        if not self.settings.beam_args:
            return runner_choice.LOCAL_RUNNER  # until the inputs' size decides
        from . import local

        return local.runner_name(self.options)

    def _workers(self) -> int | None:
        if self.in_process:
            return 1
        if self.in_process is None and not self.settings.beam_args:
            return None  # the engine is not chosen yet
        from . import local

        return local.workers(self.options) if local.is_local(self.options) else None

    def _on_this_machine(self) -> bool:
        if self.in_process:
            return True
        from . import local

        return local.on_this_machine(self.options)

    def _builds_only(self) -> bool:
        """Whether this is Beam's dry run (`--dry_run=True` on Dataflow): the job
        is built and never submitted, so nothing is written for it anywhere."""
        if self.in_process or not self.settings.beam_args:
            return False
        from . import local

        return local.builds_only(self.options)

    def _is_local(self) -> bool:
        """Whether Beam's local runner runs the import."""
        if self.in_process:
            return False
        from . import local

        return local.is_local(self.options)

    def _context(self, result_path: str | None = None) -> RunContext:
        s = self.settings
        return RunContext(
            execution_id=self.execution_id,
            launched_at=clock.iso(self.launched),
            started_at=clock.iso(self.started),
            runner=self.runner,
            workers=self._workers(),
            store_url=s.store,
            dry_run=s.dry_run,
            inputs=tuple(self.inputs),
            max_rejects=s.max_rejects,
            max_reject_ratio=s.max_reject_ratio,
            rejects_location=s.rejects_path,
            default_rejects=os.path.abspath(f"profile-import-{self.execution_id}.rejects.ndjson"),
            report_location=s.report_path,
            result_path=result_path,
            changes_location=s.changes_path,
        )

    def _failed(
        self,
        failure: str,
        exit_code: int,
        message: str | None = None,
        *,
        checked: dict[int, dict[str, int]] | None = None,
        decided: Decided | None = None,
    ) -> RunResult:
        """A FAILED report; with what the run read and checked (`checked`, per
        input) when it got that far, rather than zeros."""
        counts, rejects_by_code = read_counts(checked or {}, checked or {})
        report = build_report(
            self._context(),
            Status.FAILED,
            counts,
            decided=decided,
            rejects_by_code=rejects_by_code,
            failure=failure,
            message=message,
        )
        return RunResult(report, exit_code)

    def interrupted(self, signal_name: str) -> RunResult:
        """The report of a run stopped by a signal before it published, with
        what its pipeline's finished splits had checked."""
        return self._failed(f"interrupted ({signal_name})", 130, checked=self.checked_when_stopped)

    def _usage_error(self, error: Exception) -> RunResult:
        message = f"{Status.FAILED}: {error}; nothing ran, the store is unchanged"
        return self._failed(str(error), 2, message)

    def _check_usage(self) -> None:
        s = self.settings
        if self.in_process:
            besides = runner_choice.beam_options_besides(s.beam_args)
            if besides:
                raise UsageError(
                    f"--runner={runner_choice.IN_PROCESS} runs no Beam pipeline: "
                    f"{' '.join(besides)} cannot apply"
                )
        elif s.beam_args:
            from . import local

            unknown = local.unknown_options(s.beam_args)
            if unknown:
                raise UsageError(f"unknown option(s): {' '.join(unknown)} (see --help)")
            if not local.on_this_machine(self.options):
                self._check_reachable()
        for output in (self.rejects_output, self.changes_output):
            if output.is_stdout and self.report_output.is_stdout:
                raise UsageError(
                    f"{output.option} -: standard output already carries the report; "
                    "give --report FILE"
                )
        if self.rejects_output.is_stdout and self.changes_output.is_stdout:
            raise UsageError("--rejects - and --changes -: give one of them a FILE")

    def _check_reachable(self) -> None:
        """Workers elsewhere reach nothing on this machine: the store and its
        work folder (the reject files of each split) must be where every
        worker reaches them; so must the inputs and the outputs of a job
        nobody waits for (a waiting command stages local inputs where the
        workers read them and brings the report and the rejects back)."""
        s = self.settings
        runner = f"--runner={self.runner}"
        can = capabilities(s.store_location)
        if not can.reachable_from_remote_workers:
            # A folder or a SQLite file lives on this machine: workers elsewhere
            # could not write it, and a publish would miss their buckets.
            raise UsageError(
                f"{runner}: the store {s.store} is on this machine, where its workers cannot "
                "write; use a store in a bucket (s3://, gs://) or a PostgreSQL database, or "
                "the local runner"
            )
        if can.work_folder == "work_root":
            # Its work folder (the reject files of each split) goes where the
            # workers write: under the runner's --temp_location.
            from apache_beam.options.pipeline_options import GoogleCloudOptions

            temp = self.options.view_as(GoogleCloudOptions).temp_location
            if not temp or not _is_object(temp):
                raise UsageError(
                    f"{runner}: a PostgreSQL store keeps its run's work folder "
                    "under --temp_location, which must be an s3:// or gs:// URL "
                    f"(got {temp or 'none'})"
                )
            self.work_root = f"{temp.rstrip('/')}/profile-import"
        if s.wait and not self._builds_only():
            return
        for path in s.inputs:
            if path == input_plan.STDIN or not _is_object(path):
                raise UsageError(
                    f"{runner}: the input {path} is on this machine, where the workers of a "
                    "job nobody waits for cannot read it; put it in a bucket (s3://, gs://)"
                )
        for output in (self.report_output, self.rejects_output, self.changes_output):
            if output is self.changes_output and output.location is None:
                continue  # not asked for
            if output.target is None or not output.target.is_object:
                raise UsageError(
                    f"{runner}: {output.option} must be an s3:// or gs:// URL, where the "
                    "final step of a job nobody waits for can write it"
                )

    def _handover(self) -> str | None:
        """Where a waiting command's job on workers elsewhere reads its staged
        inputs and leaves the report and the rejects (None: on this machine).
        Beside the run's work folder, which its publish or discard removes."""
        s = self.settings
        if self._on_this_machine() or not s.wait or self._builds_only():
            return None
        if self.work_root is not None:  # a database store's, under --temp_location
            root = self.work_root
        else:
            # A name the snapshot store leaves alone (it starts with a dot).
            root = f"{s.store_location.url.rstrip('/')}/.outputs"
        return f"{root}/{self.execution_id}.outputs"

    def run(self) -> RunResult:
        # What killed runs left in $TMPDIR; never a live run's (`scratch`).
        scratch.sweep()
        with scratch.folder() as folder:
            return self._run(folder)

    def _run(self, scratch: str) -> RunResult:
        s = self.settings
        try:
            self._check_usage()
            profile_schema, profile_schema_sha = _load_profile_schema(s.profile_schema_path)
            declarations = _load_declarations(s.properties_path, s.allow_undeclared_properties)
            with logs.phase("listing inputs") as end:
                paths = input_plan.expand(s.inputs)
                sources = {}
                if input_plan.STDIN in paths:
                    sources[input_plan.STDIN] = input_plan.spool_stdin(sys.stdin.buffer, scratch)
                self.inputs = input_plan.list_inputs(paths, sources=sources)
                end["detail"] = f"{len(self.inputs)} input(s), {_size(self.inputs)}"
            handover = self._handover()
            if handover is not None:
                self.inputs = self._stage_inputs(self.inputs, handover)
            if self.in_process is None:
                self.in_process = runner_choice.small(self.inputs)
                self.runner = self._runner_name()
            # A database store's local work folder (each input's reject
            # files) is the run's scratch, removed whatever ends the run.
            work_root = self.work_root or os.path.join(scratch, "store-work")
            store = open_store(s.store_location, buckets=s.buckets, work_root=work_root)
            try:
                self.report_output.check()
            except OutputError:
                # Nothing ran: the report saying so goes to standard output.
                self.report_output = Output("--report", outputs.STDOUT)
                raise
            self.rejects_output.check()
            self.changes_output.check()
        except (UsageError, input_plan.InputError, StoreError, OutputError) as e:
            return self._usage_error(e)
        check = CheckSettings(
            default_compartment_id=s.default_compartment_id,
            profile_schema=profile_schema,
            declarations=declarations,
            max_line_bytes=s.max_line_bytes,
            redact=s.redact_rejects,
            holds_nul=store.holds_nul,
        )
        # What makes a line mean what it means, beside its content (SPEC §4).
        semantics = semantics_of(check, profile_schema_sha)
        try:
            if s.dry_run or not s.wait or self._builds_only():
                # A job nobody waits for cannot hold the lock: its publish is
                # a compare-and-swap on the version it started from.
                return self._launch(store, check, semantics, scratch)
            with contextlib.ExitStack() as held:
                with logs.phase("waiting for the store lock"):
                    held.enter_context(store.lock(s.lock_timeout))
                # The execution starts when it holds the store, so the times it
                # stamps on profiles follow the order in which runs publish.
                self.started = clock.now()
                return self._launch(store, check, semantics, scratch)
        except (StoreError, OSError) as e:
            return self._failed(str(e) if isinstance(e, StoreError) else f"store {s.store}: {e}", 1)

    def _pipeline_detail(self) -> str:
        workers = self._workers()
        return f"{self.runner}, {workers} worker(s)" if workers else self.runner

    def _submitted(self, staged: bool) -> RunResult:
        """A job launched with nobody waiting: its final step writes the report."""
        s = self.settings
        what = "publishes or discards the run" if staged else "checks the dry run"
        message = (
            f"SUBMITTED: execution {self.execution_id} runs on {self.runner}; its final step "
            f"{what} and writes the report to {s.report_path or 'the job log'}"
        )
        report = {
            "execution_id": self.execution_id,
            "status": "SUBMITTED",
            "runner": self.runner,
            "store": s.store,
            "report": s.report_path,
            "message": message,
        }
        # Nothing for the launcher to write: the report's place is the job's.
        return RunResult(report, 0, report_written=True)

    def _built(self, job: Any) -> RunResult:
        """Beam's dry run: the job was built for the service, not submitted."""
        transforms = len(job.proto_pipeline.components.transforms) if job is not None else 0
        message = (
            f"DRY RUN: execution {self.execution_id}: the {self.runner} job was built "
            f"({transforms} transforms) and not submitted (--dry_run); nothing was written"
        )
        report = {
            "execution_id": self.execution_id,
            "status": "DRY_RUN",
            "runner": self.runner,
            "store": self.settings.store,
            "version": None,
            "message": message,
        }
        # Nothing is written for a job that never runs: no report either.
        return RunResult(report, 0, report_written=True)

    def _launch(
        self, store: ProfileStore, check: CheckSettings, semantics: dict[str, Any], scratch: str
    ) -> RunResult:
        """Stages the run, runs the pipeline and waits for its final step's report."""
        s = self.settings
        parent = store.current() if store.exists() else None
        staging = (
            None if s.dry_run or self._builds_only() else store.begin(self.execution_id, parent)
        )
        # Where the final step leaves the report for the launcher waiting here;
        # workers elsewhere leave it, and the rejects, in the handover folder.
        here = self._on_this_machine()
        handover = self._handover()
        if staging is not None:
            work_dir = staging.work_dir
        else:
            work_dir = os.path.join(scratch, "work") if handover is None else f"{handover}/work"
        ctx = self._context(result_path=os.path.join(scratch, "report.json") if here else None)
        if handover is not None:
            ctx = _handed_over(ctx, handover)
        if s.changes_path is not None:
            # Not in the work folder, which a publish removes before the final
            # step writes the changes; a folder of its own the final step
            # removes, beside it when the workers are elsewhere.
            changes_dir = os.path.join(scratch, "changes") if here else f"{work_dir}-changes"
            ctx = replace(ctx, changes_dir=changes_dir)
        show = s.show_progress and (bool(self.in_process) or self._is_local())
        job = ImportJob(
            finalizer=Finalizer(ctx, store, parent, staging),
            check=check,
            semantics=semantics,
            allow_reapply=s.allow_reapply,
            buckets=store.buckets,
            source=staging.source if staging is not None else store.source(parent),
            work_dir=work_dir,
            split_bytes=s.split_bytes,
            progress_dir=os.path.join(scratch, "progress") if show else None,
            spill=self._is_local() if s.spill is None else s.spill,
            spill_root=os.path.join(scratch, "work") if is_remote(work_dir) else None,
        )
        for folder in (job.progress_dir, job.rejects_dir):
            if folder is not None and not is_remote(folder):
                os.makedirs(folder, exist_ok=True)
        if not s.wait and not self.in_process:
            ctx = replace(ctx, result_path=None)
            job = replace(job, finalizer=Finalizer(ctx, store, parent, staging))
        submitted = False
        try:
            if self.in_process:
                report = self._run_in_process(job)
            else:
                report, submitted = self._run_pipeline(job, show)
                if submitted and self._builds_only():
                    return self._built(report["job"])
                if submitted:
                    return self._submitted(staging is not None)
                if handover is not None:
                    report = self._collect_handover(report, handover)
        except KeyboardInterrupt:
            if not self.in_process:  # read before the work folder is discarded
                self.checked_when_stopped = _checked_before(job)
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the run fails it cleanly
            if isinstance(e, in_process.RunFailed):
                # Our own errors, already one line and naming their cause.
                return self._failed(
                    f"the import failed: {e}", 1, checked=e.counts, decided=e.decided
                )
            if self.in_process:
                first = str(e).strip().splitlines()
                return self._failed(f"the import failed: {first[0] if first else repr(e)}", 1)
            crash = f"the pipeline failed: {_root_message(e)} (--verbose shows Beam's log)"
            return self._published_before(store, crash) or self._failed(
                crash, 1, checked=_checked_before(job)
            )
        finally:
            if staging is not None and not submitted:
                # Discards what a failed run staged; never what a publish uses.
                store.abort(staging)
            if ctx.changes_dir is not None and not submitted:
                # A run that failed before its final step leaves its change
                # files; in a bucket (workers elsewhere) nothing else sweeps them.
                with contextlib.suppress(Exception):
                    remove_folder(ctx.changes_dir)
            if handover is not None and not self.handover_kept:
                with contextlib.suppress(Exception):
                    remove_folder(handover)
        unwritten = os.path.exists(f"{ctx.result_path}.unwritten")
        written = here and s.report_path not in (None, outputs.STDOUT) and not unwritten
        # A run published without the changes it was asked for fails too:
        # a consumer must not take the old changes file for its changes.
        exit_code = 1 if report["status"] == Status.FAILED or report.get("changes_error") else 0
        return RunResult(report, exit_code, report_written=written)

    def _published_before(self, store: ProfileStore, failure: str) -> RunResult | None:
        """The outcome of a pipeline that failed once its final step had
        published (its worker killed right after): the run as the version
        records it, its report rebuilt from there, not a FAILED report that
        says the store is unchanged. None if this run published nothing."""
        try:
            current = store.current()
        except (StoreError, OSError):
            return None
        if current is None or current.execution.get("execution_id") != self.execution_id:
            return None
        execution = current.execution
        parent = store.version(current.parent) if current.parent is not None else None
        note = (
            f"the run's final step was lost once published ({failure}); "
            f"this report is rebuilt from version {current.number}"
        )
        report = build_report(
            self._context(),
            Status(execution["status"]),
            execution["counts"],
            version=current.number,
            parent=parent,
            note=note,
        )
        return RunResult(report, 0)

    def _run_in_process(self, job: ImportJob) -> dict[str, Any]:
        show = job.progress_dir is not None
        total_bytes = sum(f.size or 0 for f in self.inputs)
        with (
            logs.phase("in process", "no Beam pipeline") as end,
            progress_display.shown(show, job.progress_dir, total_bytes, self.stderr),
        ):
            report = in_process.run(job)
            end["detail"] = report["message"]
        return report

    def _run_pipeline(self, job: ImportJob, show: bool) -> tuple[dict[str, Any], bool]:
        """Runs the Beam pipeline; returns its final step's report and whether
        the job was only submitted (nobody waits: no report here)."""
        import apache_beam as beam

        from profile_import.pipelines import beam_pipeline

        from . import local
        from .watched_workers import Watch

        s = self.settings
        ctx = job.finalizer.ctx
        runner = local.create_runner(self.options, s.beam_args)
        pipeline = beam_pipeline.build(beam.Pipeline(runner, options=self.options), job)
        if not s.wait or self._builds_only():
            submitted = pipeline.run()
            # Beam's dry run returns the job it built instead of submitting it.
            return {"job": getattr(submitted, "job", None)}, True
        total_bytes = sum(f.size or 0 for f in self.inputs)
        with (
            logs.phase("pipeline", self._pipeline_detail()) as end,
            progress_display.shown(show, job.progress_dir, total_bytes, self.stderr),
        ):
            watch = Watch()
            result: PipelineResult | None = None
            try:
                # The local runner runs the whole pipeline in `run()`.
                result = pipeline.run()
                result.wait_until_finish()
            except BaseException as e:
                if result is not None and not self._on_this_machine():
                    # An interrupted command takes its job with it: the job
                    # would otherwise run on, and publish, with nobody waiting.
                    with contextlib.suppress(Exception):
                        result.cancel()
                # What the failure came of, when a local worker died: the
                # cause, not what Beam saw of it. Not waited for on an interrupt.
                heard = self._is_local() and not isinstance(e, KeyboardInterrupt)
                death = watch.death_within(_DEATH_NOTICE_SECONDS if heard else 0.0)
                if death is not None:
                    raise death from None
                raise
            with input_plan.open_raw(ctx.result_path or ctx.report_location or "") as f:
                report: dict[str, Any] = json.load(f)
            # The final step, inside the pipeline, checked, published or discarded.
            end["detail"] = report["message"]
        return report, False

    def _stage_inputs(
        self, inputs: list[input_plan.InputFile], handover: str
    ) -> list[input_plan.InputFile]:
        """Copies the inputs on this machine where the workers read them; each
        keeps its name as given (the report's and the rejects' `file`)."""
        local = [f for f in inputs if not _is_object(f.location)]
        if not local:
            return inputs
        import smart_open

        staged = {}
        with logs.phase("staging inputs", f"{len(local)} input(s) to {handover}/inputs"):
            for f in local:
                target = f"{handover}/inputs/{f.index}/{os.path.basename(f.location)}"
                try:
                    with (
                        open(f.location, "rb") as source,
                        smart_open.open(target, "wb", compression="disable") as out,
                    ):
                        shutil.copyfileobj(source, out, 1 << 20)
                except Exception as e:  # OSError, and remote clients' own errors
                    raise input_plan.InputError(
                        f"input {f.path}: cannot be copied to {target}, where the workers "
                        f"read it: {e}"
                    ) from e
                staged[f.index] = replace(f, source=target)
        return [staged.get(f.index, f) for f in inputs]

    def _collect_handover(self, report: dict[str, Any], handover: str) -> dict[str, Any]:
        """Brings the rejects and the changes a job's final step left in the
        handover folder where the command was told (a local file, standard
        output)."""
        default_rejects = Output("--rejects", self._context().default_rejects)
        for field_name, name, output in (
            ("rejects_file", "rejects.ndjson", self.rejects_output),
            ("changes_file", "changes.ndjson", self.changes_output),
        ):
            handed = f"{handover}/{name}"
            if report.get(field_name) != handed:
                continue
            target = output if output.location is not None else default_rejects
            try:
                with input_plan.open_raw(handed) as source, target.open() as out:
                    shutil.copyfileobj(source, out, 1 << 20)
            except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
                # The run's outcome stands: the file stays where the job left it.
                logs.log.warning("cannot write %s (%s); it is at %s", target, e, handed)
                self.handover_kept = True
                continue
            report = {**report, field_name: str(target)}
        return report


def _handed_over(ctx: RunContext, handover: str) -> RunContext:
    """The context of a job whose waiting command is elsewhere: its report,
    and its rejects and changes unless they go to a bucket, are left in
    `handover` for the command."""

    def there(location: str | None, name: str) -> str | None:
        kept = location is None or _is_object(location)
        return location if kept else f"{handover}/{name}"

    return replace(
        ctx,
        report_location=f"{handover}/report.json",
        rejects_location=there(ctx.rejects_location, "rejects.ndjson"),
        default_rejects=f"{handover}/rejects.ndjson",
        changes_location=there(ctx.changes_location, "changes.ndjson"),
    )


def _checked_before(job: ImportJob) -> dict[int, dict[str, int]] | None:
    """What the finished splits of a pipeline that crashed read and checked
    (`count_files`), read before its work folder is discarded; None if that
    folder cannot be read (the report then counts nothing rather than fail)."""
    try:
        return count_files.read_count_files(job.counts_dir)
    except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
        logs.log.warning("cannot read what the run checked from %s (%s)", job.counts_dir, e)
        return None


def _is_object(url: str) -> bool:
    try:
        return parse_location(url).is_object
    except LocationError:
        return False


def _size(inputs: list[input_plan.InputFile]) -> str:
    known = [f.size for f in inputs if f.size is not None]
    text = f"{sum(known):,} bytes"
    return text if len(known) == len(inputs) else f"{text} and {len(inputs) - len(known)} unsized"


def _root_message(error: BaseException) -> str:
    """The innermost cause of a pipeline failure, in one line."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    # Beam wraps worker errors in long traces; keep the last meaningful line.
    meaningful = [line for line in text if line.strip() and not line.startswith(" ")]
    return (meaningful[-1] if meaningful else type(seen).__name__)[:500]
