"""The Flex Template's entry point: builds the import from the template's
parameters and submits it, without waiting.

Dataflow then runs the whole execution, its final step included: that step
checks the counts and the reject limits, publishes the new store version (or
discards it) and writes the report to `--report`. Nobody needs to wait for
the job, and the import completes exactly as `profile-import run` does.

    python -m profile_import.runners.dataflow.launch --inputs=gs://b/in/*.ndjson.gz \\
        --store=gs://b/store --report=gs://b/reports/r.json --runner=DataflowRunner ...
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from profile_import.runners.execution import Execution, RunSettings
from profile_import.runners.options import parse_run_args


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.INFO)
    args = list(sys.argv[1:] if argv is None else argv)
    options, beam_args = parse_run_args(args)
    settings = RunSettings.from_options(options, beam_args, wait=False)
    outcome = Execution(settings).run()
    print(outcome.report["message"], file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
