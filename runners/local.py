"""The local runner: Beam's FnApiRunner, chosen explicitly.

`DirectRunner` first tries the Prism runner, which downloads a binary at run
time: offline it fails over to the FnApiRunner, online it silently runs on
another engine. A nightly job must not depend on the network or change engine
under its users, so a run with no `--runner` gets the FnApiRunner by name.
Any other `--runner` (Dataflow, Flink, Spark, Portable...) is passed to Beam
as given.

The local run uses every core without being asked: one SDK worker process per
core (`local_worker`), each reading splits and applying buckets.
`--direct_num_workers=N` sets another count; `--direct_running_mode` given on
the command line is honoured as Beam defines it.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line's Beam flags, local by default."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    if is_local(options) and not any(a.startswith("--direct_num_workers") for a in beam_args):
        options.view_as(DirectOptions).direct_num_workers = os.cpu_count() or 1
    return options


def unknown_options(beam_args: Sequence[str]) -> list[str]:
    """The flags no Beam option knows. Beam drops them without a word, so a
    misspelled option (`--max_rejects=0`) would let a run go ahead unchecked."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    # The same option classes Beam itself parses with (PipelineOptions.get_all_options).
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


def workers(options: PipelineOptions) -> int:
    return int(options.view_as(DirectOptions).direct_num_workers or 1)


def create_runner(options: PipelineOptions, beam_args: Sequence[str]) -> Any:
    """The runner object for `options`, or None to let Beam pick by name."""
    if not is_local(options):
        return None
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
    from apache_beam.transforms import environments

    mode_given = any(a.startswith("--direct_running_mode") for a in beam_args)
    if workers(options) == 1 or mode_given:
        return FnApiRunner()
    # Worker processes, started as `local_worker` (Beam's own worker, quiet)
    # rather than by `--direct_running_mode=multi_processing`, which would
    # start Beam's worker entry point with its INFO log on our stderr.
    command = f"{shlex.quote(sys.executable)} -m profile_import.runners.local_worker"
    environment = environments.SubprocessSDKEnvironment.from_command_string(command)
    return FnApiRunner(default_environment=environment)
