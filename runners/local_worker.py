"""The worker process of a local run: Beam's Python SDK worker, quiet.

The local runner starts one of these per core. Beam's own worker entry point
logs its plumbing at INFO on stderr, and the optional cloud clients it probes
at import time warn there too: a nightly job's log should hold our summary
line and real errors only. `profile-import run --verbose` sets
PROFILE_IMPORT_VERBOSE, which keeps Beam's log and the worker's stderr.
An interrupted launcher stops its workers with `stop_workers`; a killed one
takes them with it (`parent_death.die_with_parent`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from profile_import.runners.parent_death import die_with_parent

VERBOSE_ENV = "PROFILE_IMPORT_VERBOSE"


def main() -> None:
    die_with_parent(os.getppid())
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


def stop_workers() -> None:
    """Kills the worker processes of an interrupted local run.

    Beam, unwinding an interrupted run, waits for its worker processes to
    finish their work, which they never do once the runner stopped feeding
    them: the run would hang instead of exiting. The workers are this
    process's only children (and their shells' children); Linux lists them in
    /proc, elsewhere this does nothing and Ctrl-C reaches them through the
    terminal's process group.
    """
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    descendants: list[int] = []
    wanted = {os.getpid()}
    while True:
        found = [pid for pid, ppid in parents.items() if ppid in wanted and pid not in descendants]
        if not found:
            break
        descendants += found
        wanted = set(found)
    for pid in descendants:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
