"""The run's final step: check, publish or discard, report. No Beam here:
`transforms.commit_import` runs it as the pipeline's last step, and the in-process
run (`pipelines.in_process`) calls it directly.

    Decided, counts per input, bucket results, reject files ──► Finalizer.finalize
        check the counts and the reject limits ─► gather the rejects
        ─► publish the staged version and the ledger (or discard it) ─► the report

Like Beam's `FileBasedSink` finalize step, it runs once, when every bucket and
reject file is written (its inputs are side inputs, complete before it
starts), and it is safe to retry: a retry that finds its own execution
already published reports it again rather than publishing twice. Nothing
here depends on Beam metrics: every count it checks came as data.

The report is written where the run was told (`--report`), and to
`result_path` for a launcher that waits for the run (the command line). A job
launched with nobody waiting (a Dataflow Flex Template) completes the import
exactly the same way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

from profile_import.core import clock, idempotency
from profile_import.core import rejects as reject_records
from profile_import.core import report as reports
from profile_import.core.changes import CREATED, DELETED, UPDATED
from profile_import.core.codes import RejectCode
from profile_import.core.locations import is_remote
from profile_import.core.report import Status
from profile_import.inputs.plan import InputFile
from profile_import.stores.base import ImportTarget, Staging, StoreError, Version
from profile_import.stores.buckets import open_object
from profile_import.stores.folders import remove_folder

from . import change_files, metrics
from .decisions import Decided
from .outputs import STDOUT, Output
from .reject_files import RejectFile

FIRST_ERRORS = 20
_log = logging.getLogger("profile_import")


@dataclass(frozen=True)
class RunContext:
    """What the report and the final step need beyond the data: decided by the launcher."""

    execution_id: str
    launched_at: str
    started_at: str  # the execution's start, stamped on the profiles it changes
    runner: str
    workers: int | None
    store_url: str
    dry_run: bool
    inputs: tuple[InputFile, ...]
    max_rejects: int | None = None
    max_reject_ratio: float | None = None
    rejects_location: str | None = None  # None: `default_rejects`, only if there are rejects
    default_rejects: str = ""
    report_location: str | None = None  # None or "-": the waiting launcher prints it
    result_path: str | None = None  # where a waiting launcher reads the report
    changes_location: str | None = None  # `--changes`: where the run's changes go
    changes_dir: str | None = None  # where the apply step leaves them (`change_files`)


def input_entries(
    inputs: Sequence[InputFile], decided: Decided | None = None
) -> list[dict[str, Any]]:
    """The report's `inputs`: what was listed, hashed and decided of each input."""
    hashes = {h.input_index: h for h in decided.hashes} if decided else {}
    decisions = {d.index: d for d in decided.decisions} if decided else {}
    entries = []
    for f in inputs:
        entry: dict[str, Any] = {"path": f.path}
        found = hashes.get(f.index)
        if found is not None:
            entry.update(sha256=found.sha256, lines=found.lines)
        entry.update(bytes=f.size, compression=f.compression)
        decision = decisions.get(f.index)
        if decision is not None:
            entry.update(fingerprint=decision.fingerprint, applied=decision.applies)
            if decision.skipped is not None:
                entry["skipped"] = decision.skipped
            if decision.applied_by is not None:
                entry["applied_by"] = _applied_by(decision.applied_by)
            if decision.duplicate_of is not None:
                entry["duplicate_of"] = inputs[decision.duplicate_of].path
        entries.append(entry)
    return entries


def _applied_by(applied: idempotency.AppliedInput) -> dict[str, Any]:
    return {
        "execution_id": applied.execution_id,
        "version": applied.version,
        "finished_at": applied.finished_at,
    }


def already_applied(inputs: Sequence[InputFile], decided: Decided) -> list[dict[str, Any]]:
    return [
        {"path": inputs[d.index].path, **_applied_by(d.applied_by)}
        for d in decided.decisions
        if d.applied_by is not None
    ]


def skipped_note(inputs: Sequence[InputFile], decided: Decided) -> str | None:
    """`skipped 2 input(s) applied before: a.ndjson (by execution X, version 3), ...`."""
    parts = []
    for d in decided.decisions:
        path = inputs[d.index].path
        if d.applied_by is not None:
            by = d.applied_by
            parts.append(f"{path} (by execution {by.execution_id}, version {by.version})")
        elif d.duplicate_of is not None:
            parts.append(f"{path} (same content as {inputs[d.duplicate_of].path})")
    if not parts:
        return None
    shown = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
    return f"skipped {len(parts)} input(s) applied before: {shown}"


def build_report(
    ctx: RunContext,
    status: Status,
    counts: Mapping[str, int],
    *,
    decided: Decided | None = None,
    rejects_by_code: Mapping[str, int] | None = None,
    failure: str | None = None,
    first_errors: Sequence[str] = (),
    version: int | None = None,
    parent: Version | None = None,
    message: str | None = None,
    rejects_file: str | None = None,
    note: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    finished = clock.now()
    extra: dict[str, Any] = dict(changes or {})
    if decided is not None and any(d.applied_by for d in decided.decisions):
        extra["already_applied"] = already_applied(ctx.inputs, decided)
    return reports.build(
        execution_id=ctx.execution_id,
        status=status,
        counts=counts,
        rejects_by_code=rejects_by_code or {},
        inputs=input_entries(ctx.inputs, decided),
        started_at=ctx.started_at,
        finished_at=clock.iso(finished),
        runner=ctx.runner,
        store=ctx.store_url,
        message=message
        or reports.summary_message(
            status, counts, failure=failure, version=version, dry_run=ctx.dry_run, note=note
        ),
        first_errors=first_errors,
        workers=ctx.workers,
        dry_run=ctx.dry_run,
        fingerprint=decided.fingerprint if decided is not None else None,
        version=version,
        parent_version=parent.number if parent else None,
        launched_at=ctx.launched_at,
        duration_seconds=round((finished - clock.parse(ctx.launched_at)).total_seconds(), 3),
        failure=failure,
        rejects_file=rejects_file,
        **extra,
    )


def _open_reject_file(path: str) -> Any:
    if is_remote(path):  # the work folder of a store in a bucket
        return open_object(path, "rb")
    return open(path, "rb")


def gather_rejects(
    files: Iterable[RejectFile], target: Output, default: str
) -> tuple[str | None, int, list[str]]:
    """Concatenates reject files in input order into the rejects output.

    Returns (where the rejects are or None, rejects written, the first ones
    as summaries). With no location asked, the rejects go to `default`, a file
    written only if there are rejects.
    """
    ordered = sorted(files)
    if target.location is None:
        if not ordered:
            return None, 0, []
        target = Output(target.option, default)
    written = 0
    first: list[str] = []
    with target.open() as out:
        for file in ordered:
            with _open_reject_file(file.path) as f:
                for line in f:
                    out.write(line)
                    written += 1
                    if len(first) < FIRST_ERRORS:
                        first.append(reject_records.summary(orjson.loads(line)))
    return str(target), written, first


def read_counts(
    applied: Iterable[int], input_counts: Mapping[int, Mapping[str, int]]
) -> tuple[dict[str, int], dict[str, int]]:
    """The report's counts of what was read and checked of the applied inputs
    (no profile counts yet), and its rejects by code."""
    counts = reports.empty_counts()
    rejects_by_code: dict[str, int] = {}
    for index in applied:
        for name, value in input_counts.get(index, {}).items():
            if name.startswith(metrics.REJECTED_PREFIX):
                code = name[len(metrics.REJECTED_PREFIX) :]
                rejects_by_code[code] = rejects_by_code.get(code, 0) + value
            elif name in counts:
                counts[name] += value
    return counts, {str(c): rejects_by_code[c] for c in RejectCode if c in rejects_by_code}


@dataclass(frozen=True)
class Finalizer:
    """The final step's work, run once every input to it is complete."""

    ctx: RunContext
    store: ImportTarget | None
    parent: Version | None
    staging: Staging | None  # None: a dry run

    def finalize(
        self,
        decided: Decided,
        input_counts: Mapping[int, Mapping[str, int]],
        totals: Mapping[str, int],
        reject_files: Sequence[RejectFile],
    ) -> dict[str, Any]:
        try:
            return self._finalize(decided, input_counts, totals, reject_files)
        finally:
            # The apply step's change files, whatever the run's end: with
            # workers elsewhere they are in a bucket, which nothing else sweeps.
            if self.ctx.changes_dir is not None:
                with suppress(Exception):  # never fails the run
                    remove_folder(self.ctx.changes_dir)

    def _finalize(
        self,
        decided: Decided,
        input_counts: Mapping[int, Mapping[str, int]],
        totals: Mapping[str, int],
        reject_files: Sequence[RejectFile],
    ) -> dict[str, Any]:
        ctx = self.ctx
        applied = decided.applied
        note = skipped_note(ctx.inputs, decided)
        if not applied:
            self._discard()
            message = (
                f"{Status.ALREADY_APPLIED}: every input was applied before; nothing changed "
                f"({note}). Pass --allow-reapply to apply them again"
            )
            number = self.parent.number if self.parent else None
            return build_report(
                ctx,
                Status.ALREADY_APPLIED,
                reports.empty_counts(),
                decided=decided,
                message=message,
                version=number,
                parent=self.parent,
            )

        counts, rejects_by_code = read_counts(applied, input_counts)
        for name in reports.PROFILE_COUNTS:
            counts[name] = totals.get(name, 0)

        rejects_output = Output("--rejects", ctx.rejects_location)
        try:
            rejects_path, rejects_written, first_errors = gather_rejects(
                (f for f in reject_files if f.input_index in applied),
                rejects_output,
                ctx.default_rejects,
            )
        except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
            self._discard()
            return build_report(
                ctx,
                Status.FAILED,
                counts,
                decided=decided,
                rejects_by_code=rejects_by_code,
                failure=f"cannot write the rejects to {rejects_output}: {e}",
                parent=self.parent,
                note=note,
            )

        # Nothing is lost: every line of every applied input was read, every
        # accepted command applied, every reject written. A mismatch is a bug,
        # never published.
        problems = reports.count_problems(counts, rejects_by_code)
        for content in decided.hashes:
            if content.input_index not in applied:
                continue
            read = input_counts.get(content.input_index, {}).get("lines", 0)
            if read != content.lines:
                path = ctx.inputs[content.input_index].path
                problems.append(f"{path}: {read} lines read of {content.lines}")
        if totals.get(metrics.COMMANDS_APPLIED, 0) != counts["accepted"]:
            problems.append("commands applied != accepted")
        if rejects_written != counts["rejected"]:
            problems.append("rejects written != rejected")
        failure: str | None = (
            "internal error, counts do not add up: " + "; ".join(problems)
            if problems
            else reports.reject_limit_problem(counts, ctx.max_rejects, ctx.max_reject_ratio)
        )
        status = reports.status_of(counts, failure)

        version: int | None = None
        if status is not Status.FAILED and self.staging is not None:
            try:
                version = self._publish(decided, counts, totals)
            except StoreError as e:
                failure, status = str(e), Status.FAILED
        elif self.staging is not None:
            self._discard()
        changes = None
        if status is not Status.FAILED and ctx.changes_location is not None:
            changes = self._write_changes(version, counts)
        return build_report(
            ctx,
            status,
            counts,
            decided=decided,
            rejects_by_code=rejects_by_code,
            failure=failure,
            first_errors=first_errors,
            version=version,
            parent=self.parent,
            rejects_file=rejects_path,
            note=note,
            changes=changes,
        )

    def _write_changes(self, version: int | None, counts: Mapping[str, int]) -> dict[str, Any]:
        """Writes the run's changes (SPEC §6) once it has published (a dry run:
        those it would make, version null); the report's fields saying where,
        and for which version. Failing here leaves the published run as it
        is: the report names the failure, and `changes --since` gives them."""
        ctx = self.ctx
        assert ctx.changes_location is not None and ctx.changes_dir is not None
        location = ctx.changes_location
        where = "standard output" if location == STDOUT else location
        fields: dict[str, Any] = {"changes_file": where, "changes_version": version}
        expected = {
            CREATED: counts["profiles_created"],
            UPDATED: counts["profiles_updated"],
            DELETED: counts["profiles_deleted"],
        }
        try:
            fields["changes_written"] = change_files.write_changes(
                change_files.gathered(ctx.changes_dir), location, version, expected
            )
        except Exception as e:  # noqa: BLE001 - OSError, remote clients' own errors, a bug named
            since = self.parent.number if self.parent else 0
            again = (
                f"; `profile-import changes --since {since}` gives them"
                if version is not None
                else ""
            )
            fields["changes_file"] = None
            fields["changes_error"] = f"cannot write the changes to {where}: {e}{again}"
            _log.warning("%s", fields["changes_error"])
        return fields

    def _publish(
        self, decided: Decided, counts: Mapping[str, int], totals: Mapping[str, int]
    ) -> int:
        assert self.store is not None and self.staging is not None
        ctx = self.ctx
        # A retry of this step after its publish: the store's commit returns the
        # version this execution published (every store; tests/stores contract).
        applied = [d for d in decided.decisions if d.applies]
        execution = {
            "execution_id": ctx.execution_id,
            "fingerprint": decided.fingerprint,
            "started_at": ctx.started_at,
            "status": str(reports.status_of(counts, None)),
            "inputs": [
                {
                    "path": ctx.inputs[d.index].path,
                    "sha256": decided.hashes[d.index].sha256,
                    "fingerprint": d.fingerprint,
                }
                for d in applied
            ],
            "counts": dict(counts),
        }
        delta = counts["profiles_created"] - counts["profiles_deleted"]
        written = totals.get(metrics.BUCKETS_WRITTEN, 0)
        fingerprints = [d.fingerprint for d in applied]
        return self.store.commit(self.staging, execution, delta, written, fingerprints).number

    def _discard(self) -> None:
        if self.store is not None and self.staging is not None:
            self.store.abort(self.staging)


def write_report(ctx: RunContext, report: Mapping[str, Any]) -> None:
    """Where the run was told, and where a waiting launcher reads it."""
    text = (json.dumps(report, indent=2) + "\n").encode()
    if ctx.result_path is not None:
        tmp = f"{ctx.result_path}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, ctx.result_path)
    if ctx.report_location not in (None, "-"):
        try:
            Output("--report", ctx.report_location).write(text)
        except Exception as e:  # noqa: BLE001 - OSError, and remote clients' own errors
            # The run's outcome stands, published or not: a waiting launcher
            # prints the report instead; a job nobody waits for logs it.
            _log.warning("cannot write the report to %s: %s", ctx.report_location, e)
            if ctx.result_path is None:
                _log.warning("report: %s", text.decode())
            else:
                with open(f"{ctx.result_path}.unwritten", "w", encoding="utf-8") as f:
                    f.write(str(e))


def add_counts(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The sum, name by name, of several counts."""
    total: dict[str, int] = {}
    for one in counts:
        for name, value in one.items():
            total[name] = total.get(name, 0) + value
    return total
