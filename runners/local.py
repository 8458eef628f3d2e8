"""The local runner: Beam's FnApiRunner, chosen explicitly.

Beam's `DirectRunner` first tries the Prism runner, which downloads a binary
at run time: offline it fails over to the FnApiRunner, online it silently runs
on another engine. A nightly job must not depend on the network or change
engine under its users, so a run with no `--runner`, `--runner=FnApiRunner` or
`--runner=DirectRunner` (Beam's usual name for "run it here") gets the
FnApiRunner by name. Any other runner Beam knows (Dataflow, Flink, Spark,
Portable...) is passed to Beam as given; a name Beam does not know is refused
before anything runs.

The local run uses every core without being asked: one SDK worker process per
core (`local_worker`), each reading splits and applying buckets; one that
dies fails the run at once (`watched_workers`).
`--direct_num_workers=N` sets another count; `--direct_running_mode` given on
the command line is honoured as Beam defines it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, NoReturn

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    _BeamArgumentParser,
)

LOCAL_RUNNER = "FnApiRunner"
# The names that mean the local runner, as Beam matches them: any case, with
# or without the "Runner" suffix.
LOCAL_RUNNER_NAMES = ("FnApiRunner", "DirectRunner")


class OptionError(ValueError):
    """A Beam option the run cannot take: unknown, a bad value, an unknown runner."""


class _CheckingParser(_BeamArgumentParser):
    # Beam's parser prints its whole usage (140 lines) and exits on a bad
    # value; here the error is raised, for a one-line message.
    def error(self, message: str) -> NoReturn:
        raise OptionError(message.removeprefix("argument "))


def _runner_key(name: str) -> str:
    key = name.lower()
    return key if key.endswith("runner") else f"{key}runner"


def is_local_name(name: str | None) -> bool:
    """Whether a `--runner` value means the local runner (None: not given)."""
    return not name or _runner_key(name) in {n.lower() for n in LOCAL_RUNNER_NAMES}


def check_options(beam_args: Sequence[str]) -> None:
    """Raises OptionError, naming the option, for a flag no Beam option knows
    (Beam would drop it without a word, so a misspelled `--max_rejects=0` would
    let a run go ahead unchecked), a value Beam refuses, or a runner name Beam
    does not know."""
    parser = _CheckingParser(allow_abbrev=False)
    # The same option classes Beam itself parses with (PipelineOptions.get_all_options).
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    known, unknown = parser.parse_known_args(list(beam_args))
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        raise OptionError(f"unknown option(s): {' '.join(flags)} (see --help)")
    runner = known.runner
    if not isinstance(runner, str) or is_local_name(runner) or "." in runner:
        return  # a dotted name is a runner class, as Beam allows
    known_names = {_runner_key(n): n for n in StandardOptions.KNOWN_RUNNER_NAMES}
    if _runner_key(runner) not in known_names:
        others = ", ".join(
            n
            for n in known_names.values()
            if n not in LOCAL_RUNNER_NAMES and not n.startswith("Test")
        )
        raise OptionError(
            f"--runner={runner}: not a Beam runner; the local runner is FnApiRunner "
            f"(the default) or DirectRunner, Beam also knows {others}"
        )


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line's Beam flags, local by default."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner is None or (
        isinstance(standard.runner, str) and is_local_name(standard.runner)
    ):
        standard.runner = LOCAL_RUNNER
    if is_local(options) and not any(a.startswith("--direct_num_workers") for a in beam_args):
        options.view_as(DirectOptions).direct_num_workers = os.cpu_count() or 1
    return options


def unknown_options(beam_args: Sequence[str]) -> list[str]:
    """The flags no Beam option knows (check_options says more)."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(beam_args))
    return [arg for arg in unknown if arg.startswith("-")]


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def is_local(options: PipelineOptions) -> bool:
    return runner_name(options) == LOCAL_RUNNER


def on_this_machine(options: PipelineOptions) -> bool:
    """Whether every worker runs on this machine and sees its disk: the local
    runner, or the portable runner with an embedded job service and its
    workers in this process (`--job_endpoint=embed --environment_type=LOOPBACK`,
    the path Flink and Spark take, tested offline)."""
    if is_local(options):
        return True
    portable = options.view_as(PortableOptions)
    return (
        runner_name(options) == "PortableRunner"
        and portable.job_endpoint == "embed"
        and (portable.environment_type or "").upper() == "LOOPBACK"
    )


def builds_only(options: PipelineOptions) -> bool:
    """Whether Beam only builds the job: Dataflow's dry run (`--dry_run=...`),
    which translates the job for the service and never submits it. Beam takes
    any value given there as set (`--dry_run=False` too), and so does this."""
    from apache_beam.options.pipeline_options import TestOptions

    dataflow = _runner_key(runner_name(options)) == "dataflowrunner"
    return dataflow and bool(options.view_as(TestOptions).dry_run)


def workers(options: PipelineOptions) -> int:
    return int(options.view_as(DirectOptions).direct_num_workers or 1)


def create_runner(options: PipelineOptions, beam_args: Sequence[str]) -> Any:
    """The runner object for `options`, or None to let Beam pick by name."""
    if not is_local(options):
        return None
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from .watched_workers import WatchedRunner

    mode_given = any(a.startswith("--direct_running_mode") for a in beam_args)
    if workers(options) == 1 or mode_given:
        return FnApiRunner()
    # Worker processes, forked from a process that imported Beam once
    # (`fork_server`), each Beam's own worker, quiet (`local_worker`), rather
    # than started by `--direct_running_mode=multi_processing`, which would
    # start a Python that imports Beam per worker, with Beam's INFO log on
    # our stderr; and watched, so that one that dies fails the run
    # (`watched_workers`).
    return WatchedRunner()


def serving_forks(runner: Any, from_here: bool) -> contextlib.AbstractContextManager[object]:
    """For the time of a run on `runner`: its fork server (`fork_server`), if it
    has one, started now, before the run starts threads; `from_here`: forked
    from this process, which runs nothing but this import (the command line's)."""
    from .watched_workers import WatchedRunner

    if isinstance(runner, WatchedRunner):
        return runner.serving_forks(from_here)
    return contextlib.nullcontext()
