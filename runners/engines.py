"""The engine that runs an import, chosen once per run: this process
(`pipelines.in_process`) or a Beam runner (`pipelines.beam_pipeline`).

The launcher asks the engine what differs between them (its name and workers
in the report, whether its workers share this machine, whether it only builds
the job, what it refuses) and hands it the job to run; it never tests which
engine it holds. With no Beam option the inputs' size decides, once they are
listed (`SizeDecides`, `runner_choice.small`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from profile_import.inputs import plan as input_plan
from profile_import.pipelines import in_process
from profile_import.pipelines.job import ImportJob
from profile_import.stores import capabilities
from profile_import.transforms.steps.outputs import Output

from . import logs, progress_display, runner_choice
from .handover import in_a_bucket
from .settings import RunSettings, UsageError

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineResult

# How long a failed pipeline's launcher waits to hear that one of its local
# workers died, which its failure then names.
_DEATH_NOTICE_SECONDS = 2.0


@dataclass(frozen=True)
class Ran:
    """What an engine's run gives back: the final step's report, or None when
    the job was only submitted (nobody waits); `built`, Beam's dry run's job."""

    report: dict[str, Any] | None
    built: Any = None


@dataclass(frozen=True)
class Outputs:
    """The run's outputs, as the engine's checks need them."""

    report: Output
    rejects: Output
    changes: Output


class Engine(Protocol):
    """What the launcher asks of the engine it chose."""

    @property
    def name(self) -> str:
        """The report's `runner`."""

    @property
    def in_process(self) -> bool:
        """Whether the run is this process: it always waits for its report."""

    @property
    def on_this_machine(self) -> bool:
        """Whether every worker sees this machine's disk."""

    @property
    def builds_only(self) -> bool:
        """Beam's dry run: the job is built, never submitted."""

    @property
    def spills(self) -> bool:
        """Whether it shuffles batches through files by default (Beam's local runner)."""

    @property
    def shows_progress(self) -> bool:
        """Whether its workers drop progress markers where the launcher reads them."""

    @property
    def crash_may_follow_publish(self) -> bool:
        """Whether its run can fail after its final step published."""

    def workers(self) -> int | None: ...

    def decided(self, inputs: Sequence[input_plan.InputFile]) -> Engine:
        """The engine that runs these inputs: itself, once one is chosen."""

    def check(self, settings: RunSettings, outputs: Outputs) -> str | None:
        """Raises `UsageError` for what this engine cannot do; returns where a
        database store's work folder goes (None: a local one)."""

    def run(self, job: ImportJob, settings: RunSettings, stderr: TextIO) -> Ran: ...

    def failure(self, error: Exception) -> str:
        """The one line a crash of this engine's run reports."""


def requested(settings: RunSettings) -> Engine:
    """The engine the settings ask for; with no Beam option, the size decides."""
    asked = runner_choice.requested(settings.beam_args)
    if asked is None:
        return SizeDecides()
    return InProcess() if asked else BeamRunner(settings.beam_args)


class InProcess:
    """This process, and forked workers beside it (`pipelines.in_process`)."""

    name = runner_choice.IN_PROCESS
    in_process = True
    on_this_machine = True
    builds_only = False
    spills = False
    shows_progress = True
    crash_may_follow_publish = False

    def workers(self) -> int | None:
        return 1

    def decided(self, inputs: Sequence[input_plan.InputFile]) -> Engine:
        return self

    def check(self, settings: RunSettings, outputs: Outputs) -> str | None:
        besides = runner_choice.beam_options_besides(settings.beam_args)
        if besides:
            raise UsageError(
                f"--runner={runner_choice.IN_PROCESS} runs no Beam pipeline: "
                f"{' '.join(besides)} cannot apply"
            )
        return None

    def run(self, job: ImportJob, settings: RunSettings, stderr: TextIO) -> Ran:
        show = job.progress_dir is not None
        with (
            logs.phase("in process", "no Beam pipeline") as end,
            progress_display.shown(show, job.progress_dir, _total_bytes(job), stderr),
        ):
            report = in_process.run(job)
            end["detail"] = report["message"]
        return Ran(report)

    def failure(self, error: Exception) -> str:
        first = str(error).strip().splitlines()
        return f"the import failed: {first[0] if first else repr(error)}"


class SizeDecides:
    """No engine asked for: once the inputs are listed, their size chooses this
    process or Beam's local runner. Until then, reported as the local runner."""

    name = runner_choice.LOCAL_RUNNER
    in_process = False
    on_this_machine = True
    builds_only = False
    spills = False
    shows_progress = False
    crash_may_follow_publish = False

    def workers(self) -> int | None:
        return None

    def decided(self, inputs: Sequence[input_plan.InputFile]) -> Engine:
        return InProcess() if runner_choice.small(inputs) else BeamRunner([])

    def check(self, settings: RunSettings, outputs: Outputs) -> str | None:
        return None

    def run(self, job: ImportJob, settings: RunSettings, stderr: TextIO) -> Ran:
        raise AssertionError("the inputs' size decides the engine before it runs")

    def failure(self, error: Exception) -> str:
        raise AssertionError("the inputs' size decides the engine before it runs")


class BeamRunner:
    """The Beam pipeline on the runner the Beam options name (the local runner
    by default). Beam is imported only when one of these is asked something."""

    in_process = False
    crash_may_follow_publish = True

    def __init__(self, beam_args: Sequence[str]) -> None:
        self.beam_args = list(beam_args)

    @cached_property
    def options(self) -> PipelineOptions:
        from . import local

        return local.pipeline_options(self.beam_args)

    @cached_property
    def name(self) -> str:
        if not self.beam_args:
            return runner_choice.LOCAL_RUNNER
        from . import local

        return local.runner_name(self.options)

    @cached_property
    def is_local(self) -> bool:
        """Whether Beam's local runner runs the import."""
        from . import local

        return local.is_local(self.options)

    @cached_property
    def on_this_machine(self) -> bool:
        from . import local

        return local.on_this_machine(self.options)

    @cached_property
    def builds_only(self) -> bool:
        """Whether this is Beam's dry run (`--dry_run=True` on Dataflow): the job
        is built and never submitted, so nothing is written for it anywhere."""
        if not self.beam_args:
            return False
        from . import local

        return local.builds_only(self.options)

    @property
    def spills(self) -> bool:
        return self.is_local

    @property
    def shows_progress(self) -> bool:
        return self.is_local

    def workers(self) -> int | None:
        from . import local

        return local.workers(self.options) if self.is_local else None

    def decided(self, inputs: Sequence[input_plan.InputFile]) -> Engine:
        return self

    def check(self, settings: RunSettings, outputs: Outputs) -> str | None:
        if not self.beam_args:
            return None
        from . import local

        unknown = local.unknown_options(self.beam_args)
        if unknown:
            raise UsageError(f"unknown option(s): {' '.join(unknown)} (see --help)")
        if self.on_this_machine:
            return None
        return self._check_reachable(settings, outputs)

    def _check_reachable(self, settings: RunSettings, outputs: Outputs) -> str | None:
        """Workers elsewhere reach nothing on this machine: the store and its
        work folder (the reject files of each split) must be where every
        worker reaches them; so must the inputs and the outputs of a job
        nobody waits for (a waiting command stages local inputs where the
        workers read them and brings the report and the rejects back)."""
        s = settings
        runner = f"--runner={self.name}"
        work_root = None
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
            if not temp or not in_a_bucket(temp):
                raise UsageError(
                    f"{runner}: a PostgreSQL store keeps its run's work folder "
                    "under --temp_location, which must be an s3:// or gs:// URL "
                    f"(got {temp or 'none'})"
                )
            work_root = f"{temp.rstrip('/')}/profile-import"
        if s.wait and not self.builds_only:
            return work_root
        for path in s.inputs:
            if path == input_plan.STDIN or not in_a_bucket(path):
                raise UsageError(
                    f"{runner}: the input {path} is on this machine, where the workers of a "
                    "job nobody waits for cannot read it; put it in a bucket (s3://, gs://)"
                )
        for output in (outputs.report, outputs.rejects, outputs.changes):
            if output is outputs.changes and output.location is None:
                continue  # not asked for
            if output.target is None or not output.target.is_object:
                raise UsageError(
                    f"{runner}: {output.option} must be an s3:// or gs:// URL, where the "
                    "final step of a job nobody waits for can write it"
                )
        return work_root

    def run(self, job: ImportJob, settings: RunSettings, stderr: TextIO) -> Ran:
        """Runs the Beam pipeline and returns its final step's report, or None
        when the job was only submitted (nobody waits: no report here)."""
        import apache_beam as beam

        from profile_import.pipelines import beam_pipeline

        from . import local

        runner = local.create_runner(self.options, self.beam_args)
        pipeline = beam_pipeline.build(beam.Pipeline(runner, options=self.options), job)
        with local.serving_forks(runner, from_here=settings.own_process):
            return self._ran(pipeline, job, settings, stderr)

    def _ran(self, pipeline: Any, job: ImportJob, settings: RunSettings, stderr: TextIO) -> Ran:
        from .watched_workers import Watch

        ctx = job.finalizer.ctx
        if not settings.wait or self.builds_only:
            submitted = pipeline.run()
            # Beam's dry run returns the job it built instead of submitting it.
            return Ran(None, built=getattr(submitted, "job", None))
        show = job.progress_dir is not None
        workers = self.workers()
        detail = f"{self.name}, {workers} worker(s)" if workers else self.name
        with (
            logs.phase("pipeline", detail) as end,
            progress_display.shown(show, job.progress_dir, _total_bytes(job), stderr),
        ):
            watch = Watch()
            result: PipelineResult | None = None
            try:
                # The local runner runs the whole pipeline in `run()`.
                result = pipeline.run()
                result.wait_until_finish()
            except BaseException as e:
                if result is not None and not self.on_this_machine:
                    # An interrupted command takes its job with it: the job
                    # would otherwise run on, and publish, with nobody waiting.
                    with contextlib.suppress(Exception):
                        result.cancel()
                # What the failure came of, when a local worker died: the
                # cause, not what Beam saw of it. Not waited for on an interrupt.
                heard = self.is_local and not isinstance(e, KeyboardInterrupt)
                death = watch.death_within(_DEATH_NOTICE_SECONDS if heard else 0.0)
                if death is not None:
                    raise death from None
                raise
            with input_plan.open_raw(ctx.result_path or ctx.report_location or "") as f:
                report: dict[str, Any] = json.load(f)
            # The final step, inside the pipeline, checked, published or discarded.
            end["detail"] = report["message"]
        return Ran(report)

    def failure(self, error: Exception) -> str:
        return f"the pipeline failed: {_root_message(error)} (--verbose shows Beam's log)"


def _total_bytes(job: ImportJob) -> int:
    inputs = job.finalizer.ctx.inputs or ()
    return sum(f.size or 0 for f in inputs)


def _root_message(error: BaseException) -> str:
    """The innermost cause of a pipeline failure, in one line."""
    seen = error
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    # Beam wraps worker errors in long traces; keep the last meaningful line.
    meaningful = [line for line in text if line.strip() and not line.startswith(" ")]
    return (meaningful[-1] if meaningful else type(seen).__name__)[:500]
