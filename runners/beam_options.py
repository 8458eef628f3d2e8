"""`ImportOptions`: the options of an import run as Beam pipeline options.

Declared from `runners.options.OPTIONS`, so that Beam knows them (a Beam
option parser never drops them as unknown) and a Dataflow job shows them.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from .options import add_run_options


class ImportOptions(PipelineOptions):
    """The options of an import run, as Beam pipeline options."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        add_run_options(parser, command_line=False)
