"""The local runner: Beam's FnApiRunner, chosen explicitly.

`DirectRunner` first tries the Prism runner, which downloads a binary at run
time: offline it fails over to the FnApiRunner, online it silently runs on
another engine. A nightly job must not depend on the network or change engine
under its users, so a run with no `--runner` gets the FnApiRunner by name.
Any other `--runner` (Dataflow, Flink, Spark, Portable...) is passed to Beam
as given.

The local run uses every core without being asked: one SDK worker process per
core (`--direct_num_workers`, `--direct_running_mode=multi_processing`), each
reading splits and applying buckets. Either option given on the command line
wins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the command line's Beam flags, local by default."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = LOCAL_RUNNER
    if is_local(options):
        direct = options.view_as(DirectOptions)
        given = " ".join(beam_args)
        if "--direct_num_workers" not in given:
            direct.direct_num_workers = os.cpu_count() or 1
        workers = direct.direct_num_workers or os.cpu_count() or 1
        if "--direct_running_mode" not in given:
            direct.direct_running_mode = "multi_processing" if workers > 1 else "in_memory"
    return options


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def is_local(options: PipelineOptions) -> bool:
    return runner_name(options) in (LOCAL_RUNNER, "DirectRunner", "SwitchingDirectRunner")
