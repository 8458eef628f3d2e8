"""The worker process of a local run: Beam's Python SDK worker, quiet.

The local runner starts one of these per core. Beam's own worker entry point
logs its plumbing at INFO on stderr, and the optional cloud clients it probes
at import time warn there too: a nightly job's log should hold our summary
line and real errors only. `profile-import run --verbose` sets
PROFILE_IMPORT_VERBOSE, which keeps Beam's log and the worker's stderr.
"""

from __future__ import annotations

import logging
import os
import sys

VERBOSE_ENV = "PROFILE_IMPORT_VERBOSE"


def main() -> None:
    if not os.environ.get(VERBOSE_ENV):
        logging.disable(logging.ERROR)
        # The SDK worker also prints a failing bundle's traceback straight to
        # stderr. The runner receives the same error and the launcher reports
        # its cause in one line, so only --verbose keeps the worker's stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
    from apache_beam.runners.worker import sdk_worker_main  # after logging is set

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
