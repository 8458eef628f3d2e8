"""One execution of an import, from the command line's settings to its report.

    settings ─► checks ─► list inputs ─► choose the engine (`engines`)
        ─► prove the outputs writable ─► lock the store (local runs)
        ─► stage the run ─► engine.run ─► the report its final step wrote

The launcher reads no input content: the engine numbers, fingerprints,
checks, applies, and in its last step (`transforms.commit_import`, or the
in-process engine's) checks the counts and publishes or discards. Waiting,
the progress display and the lock are all that the command line adds to
what a job launched with nobody waiting does. What the import is (its line
rules, its semantic fingerprint) is `pipelines.job`'s; what differs between
engines is `engines`'; a job on workers elsewhere is handed over through
`handover`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from dataclasses import dataclass, replace
from typing import Any, TextIO

from profile_import.core import clock
from profile_import.core.commands import CheckSettings
from profile_import.core.locations import is_remote
from profile_import.core.report import Status
from profile_import.inputs import plan as input_plan
from profile_import.pipelines import in_process
from profile_import.pipelines.job import DefinitionError, ImportJob, LineRules, semantics_of
from profile_import.stores import ProfileStore, StoreError, open_store
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

from . import engines, logs
from . import handover as handover_folder
from .settings import RunSettings, UsageError

__all__ = ["Execution", "RunResult", "RunSettings", "UsageError", "new_execution_id"]


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


class Execution:
    """One run of `profile-import run`."""

    def __init__(self, settings: RunSettings, stderr: TextIO = sys.stderr) -> None:
        self.settings = settings
        self.stderr = stderr
        # `launched`: when the command started, for the duration; `started`:
        # the execution's start, when it holds the store, stamped on profiles.
        self.launched = self.started = clock.now()
        self.execution_id = new_execution_id(self.started)
        # Asked for, or decided by the inputs' size once they are listed.
        self.engine: engines.Engine = engines.requested(settings)
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

    def _context(self, result_path: str | None = None) -> RunContext:
        s = self.settings
        return RunContext(
            execution_id=self.execution_id,
            launched_at=clock.iso(self.launched),
            started_at=clock.iso(self.started),
            runner=self.engine.name,
            workers=self.engine.workers(),
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
        checked = engines.Outputs(self.report_output, self.rejects_output, self.changes_output)
        self.work_root = self.engine.check(self.settings, checked)
        for output in (self.rejects_output, self.changes_output):
            if output.is_stdout and self.report_output.is_stdout:
                raise UsageError(
                    f"{output.option} -: standard output already carries the report; "
                    "give --report FILE"
                )
        if self.rejects_output.is_stdout and self.changes_output.is_stdout:
            raise UsageError("--rejects - and --changes -: give one of them a FILE")

    def _handover(self) -> str | None:
        """Where a waiting command's job on workers elsewhere reads its staged
        inputs and leaves the report and the rejects (None: on this machine)."""
        s = self.settings
        if self.engine.on_this_machine or not s.wait or self.engine.builds_only:
            return None
        return handover_folder.folder(s.store_location, self.work_root, self.execution_id)

    def run(self) -> RunResult:
        # What killed runs left in $TMPDIR; never a live run's (`scratch`).
        scratch.sweep()
        with scratch.folder() as folder:
            return self._run(folder)

    def _run(self, scratch: str) -> RunResult:
        s = self.settings
        try:
            self._check_usage()
            rules = LineRules.load(
                s.profile_schema_path, s.properties_path, s.allow_undeclared_properties
            )
            with logs.phase("listing inputs") as end:
                paths = input_plan.expand(s.inputs)
                sources = {}
                if input_plan.STDIN in paths:
                    sources[input_plan.STDIN] = input_plan.spool_stdin(sys.stdin.buffer, scratch)
                self.inputs = input_plan.list_inputs(paths, sources=sources)
                end["detail"] = f"{len(self.inputs)} input(s), {_size(self.inputs)}"
            handover = self._handover()
            if handover is not None:
                self.inputs = handover_folder.stage_inputs(self.inputs, handover)
            self.engine = self.engine.decided(self.inputs)
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
        except (UsageError, DefinitionError, input_plan.InputError, StoreError, OutputError) as e:
            return self._usage_error(e)
        check = rules.check_settings(
            default_compartment_id=s.default_compartment_id,
            max_line_bytes=s.max_line_bytes,
            redact=s.redact_rejects,
            holds_nul=store.holds_nul,
        )
        # What makes a line mean what it means, beside its content (SPEC §4).
        semantics = semantics_of(check, rules.profile_schema_sha)
        try:
            if s.dry_run or not s.wait or self.engine.builds_only:
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

    def _submitted(self, staged: bool) -> RunResult:
        """A job launched with nobody waiting: its final step writes the report."""
        s = self.settings
        what = "publishes or discards the run" if staged else "checks the dry run"
        message = (
            f"SUBMITTED: execution {self.execution_id} runs on {self.engine.name}; its final step "
            f"{what} and writes the report to {s.report_path or 'the job log'}"
        )
        report = {
            "execution_id": self.execution_id,
            "status": "SUBMITTED",
            "runner": self.engine.name,
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
            f"DRY RUN: execution {self.execution_id}: the {self.engine.name} job was built "
            f"({transforms} transforms) and not submitted (--dry_run); nothing was written"
        )
        report = {
            "execution_id": self.execution_id,
            "status": "DRY_RUN",
            "runner": self.engine.name,
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
            None if s.dry_run or self.engine.builds_only else store.begin(self.execution_id, parent)
        )
        # Where the final step leaves the report for the launcher waiting here;
        # workers elsewhere leave it, and the rejects, in the handover folder.
        here = self.engine.on_this_machine
        handover = self._handover()
        if staging is not None:
            work_dir = staging.work_dir
        else:
            work_dir = os.path.join(scratch, "work") if handover is None else f"{handover}/work"
        ctx = self._context(result_path=os.path.join(scratch, "report.json") if here else None)
        if handover is not None:
            ctx = handover_folder.handed_over(ctx, handover)
        if s.changes_path is not None:
            # Not in the work folder, which a publish removes before the final
            # step writes the changes; a folder of its own the final step
            # removes, beside it when the workers are elsewhere.
            changes_dir = os.path.join(scratch, "changes") if here else f"{work_dir}-changes"
            ctx = replace(ctx, changes_dir=changes_dir)
        show = s.show_progress and self.engine.shows_progress
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
            spill=self.engine.spills if s.spill is None else s.spill,
            spill_root=os.path.join(scratch, "work") if is_remote(work_dir) else None,
        )
        for folder in (job.progress_dir, job.rejects_dir):
            if folder is not None and not is_remote(folder):
                os.makedirs(folder, exist_ok=True)
        if not s.wait and not self.engine.in_process:
            ctx = replace(ctx, result_path=None)
            job = replace(job, finalizer=Finalizer(ctx, store, parent, staging))
        submitted = False
        try:
            ran = self.engine.run(job, s, self.stderr)
            if ran.report is None:
                submitted = True
                if self.engine.builds_only:
                    return self._built(ran.built)
                return self._submitted(staging is not None)
            report = ran.report
            if handover is not None:
                report, self.handover_kept = handover_folder.collect(
                    report,
                    handover,
                    self.rejects_output,
                    self.changes_output,
                    self._context().default_rejects,
                )
        except KeyboardInterrupt:
            if not self.engine.in_process:  # read before the work folder is discarded
                self.checked_when_stopped = _checked_before(job)
            raise
        except in_process.RunFailed as e:
            # Our own errors, already one line and naming their cause.
            return self._failed(f"the import failed: {e}", 1, checked=e.counts, decided=e.decided)
        except Exception as e:  # noqa: BLE001 - any failure of the run fails it cleanly
            failure = self.engine.failure(e)
            if not self.engine.crash_may_follow_publish:
                return self._failed(failure, 1)
            return self._published_before(store, failure) or self._failed(
                failure, 1, checked=_checked_before(job)
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


def _checked_before(job: ImportJob) -> dict[int, dict[str, int]] | None:
    """What the finished splits of a pipeline that crashed read and checked
    (`count_files`), read before its work folder is discarded; None if that
    folder cannot be read (the report then counts nothing rather than fail)."""
    try:
        return count_files.read_count_files(job.counts_dir)
    except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
        logs.log.warning("cannot read what the run checked from %s (%s)", job.counts_dir, e)
        return None


def _size(inputs: list[input_plan.InputFile]) -> str:
    known = [f.size for f in inputs if f.size is not None]
    text = f"{sum(known):,} bytes"
    return text if len(known) == len(inputs) else f"{text} and {len(inputs) - len(known)} unsized"
