"""The worker process of a local run: Beam's Python SDK worker, quiet.

The local runner starts one of these per core, each forked from its run's
fork server (`fork_server`), which has Beam imported once for all: forked
from the launcher itself (`serve_forked`) or started as this module with
`--serve-forks`.
Beam's own worker entry point logs its plumbing at INFO on stderr, and the
optional cloud clients it probes at import time warn there too: a nightly
job's log should hold our summary line and real errors only.
`profile-import run --verbose` sets PROFILE_IMPORT_VERBOSE, which keeps
Beam's log and the worker's stderr. An interrupted launcher stops its
workers with `stop_workers`; a killed one takes them with it
(`parent_death.die_with_parent`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from profile_import.runners.parent_death import die_with_parent

VERBOSE_ENV = "PROFILE_IMPORT_VERBOSE"
# What this module is given to serve forks rather than be a worker.
SERVE_FORKS_FLAG = "--serve-forks"


def main() -> None:
    die_with_parent(os.getppid())
    _quiet()
    if sys.argv[1:] == [SERVE_FORKS_FLAG]:
        serve_forks()
        return
    from apache_beam.runners.worker import sdk_worker_main  # after logging is set

    sdk_worker_main.main(sys.argv)


def _quiet() -> None:
    if not os.environ.get(VERBOSE_ENV):
        logging.disable(logging.ERROR)
        # The SDK worker also prints a failing bundle's traceback straight to
        # stderr. The runner receives the same error and the launcher reports
        # its cause in one line, so only --verbose keeps the worker's stderr.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)


def import_worker() -> Callable[[list[str]], None]:
    """Imports what every worker runs (Beam's SDK worker, the pipeline's steps)
    and returns the worker's entry point."""
    from apache_beam.runners.worker import sdk_worker_main

    import profile_import.pipelines.beam_pipeline  # noqa: F401 - what every worker runs

    return sdk_worker_main.main


def serve_forked(parent: int, requests: int, answers: int) -> NoReturn:
    """The fork server's life, just forked from the launcher `parent` (with
    `import_worker` done): as if it had started new, then `serve_forks` on the
    pipes `requests` and `answers`."""

    def serve() -> None:
        # The launcher's objects (a database connection, the store's files) are
        # never finalized here, and a worker's collections never walk them.
        gc.freeze()
        for signum in signal.valid_signals():
            handler = signal.getsignal(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                fresh = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
                signal.signal(signum, fresh)
        _quiet()
        serve_forks()

    _forked_life(parent, serve, (requests, answers))


def serve_forks() -> None:
    """The fork server of a local run (`fork_server`): imports Beam's SDK
    worker and the pipeline's steps once (if not yet), then forks a worker for
    each request on stdin, answers its pid on stdout, and reports its end as it
    reaps it. Ends once stdin is closed and every worker it started has been
    reaped."""
    run_worker = import_worker()
    server = os.getpid()
    # SIGCHLD wakes the loop below through this pipe.
    woken, wake = os.pipe()
    os.set_blocking(woken, False)
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(woken, selectors.EVENT_READ)
    pending = b""
    live: set[int] = set()
    reading = True
    while reading or live:
        for key, _ in selector.select():
            if key.fd == woken:
                with contextlib.suppress(BlockingIOError):
                    while os.read(woken, 512):
                        pass
                continue
            chunk = os.read(0, 1 << 16)
            if not chunk:
                reading = False
                selector.unregister(0)
                continue
            *requests, pending = (pending + chunk).split(b"\n")
            for request in requests:
                pid = os.fork()
                if pid == 0:
                    _forked_worker(server, json.loads(request), run_worker)
                live.add(pid)
                _reply(f"started {pid}")
        while live:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            live.discard(pid)
            _reply(f"ended {pid} {os.waitstatus_to_exitcode(status)}")


def _reply(line: str) -> None:
    os.write(1, f"{line}\n".encode("ascii"))


def _forked_worker(server: int, env: dict[str, str], run: Callable[[list[str]], None]) -> NoReturn:
    """A worker's life, just forked from the server: its own environment, no
    handle of the server's, Beam's SDK worker until the runner closes it."""

    def work() -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        run([])

    _forked_life(server, work)


def _forked_life(
    parent: int, life: Callable[[], None], stdio: tuple[int, int] | None = None
) -> NoReturn:
    """A process just forked from `parent`: `stdio` as its stdin and stdout
    (None: the null device), no other descriptor of its parent's, ending
    with `parent`; then `life`. It ends there, with no exit handler of its
    parent's run: its status says how (0: `life` returned)."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        if stdio is None:
            devnull = os.open(os.devnull, os.O_RDWR)
            stdio = (devnull, devnull)
        os.dup2(stdio[0], 0)
        os.dup2(stdio[1], 1)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        die_with_parent(parent)
        life()
        code = 0
    except BaseException:  # noqa: BLE001 - a process's end is reported by its status
        traceback.print_exc()
    finally:
        os._exit(code)


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
