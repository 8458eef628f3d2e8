"""The local runner's workers, forked from one process that imported Beam once.

Each worker process of Beam's local runner used to start as a new Python
that imported Beam (over a second of CPU each: the largest cost Beam adds to
a local run). A local run now has one fork server (`local_worker`), which
forks each worker the runner asks for, with Beam's SDK worker and the
pipeline's steps already imported.

The command line's server is forked from the launcher itself, before the
run starts: the launcher has Beam imported already, runs nothing but this
import, and has no thread but its main one, so nothing in it is held by a
thread a fork would leave behind (C libraries' own threads, such as a BLAS
pool or an allocator's, are fork-aware; a fresh server imports them too),
and gRPC, imported, is not in use yet. It starts as if new: the launcher's
descriptors closed, its signal handlers back to Python's, its objects never
finalized there. A caller of the Python API gets a new Python with its
environment (`local_worker --serve-forks`), which imports Beam once: its
process may hold threads, its own or gRPC's from an earlier run, that a
fork would copy in a state nobody can vouch for.

What the runner knew of a worker it started itself, it still knows
(`watched_workers`): the server answers each request with the worker's pid,
and reports each worker's end with its exit status as it reaps it. A server
that ends takes its workers with it (they die with their parent), and every
worker it had ends with the server's fate. The server dies with the thread
that started it, and ends once the run is over and all its workers are
reaped; the launcher waits for it, so the workers' CPU counts in the
launcher's, as when they were its own children.

The protocol: a request is one line of JSON on the server's stdin (the
worker's environment); the server answers `started PID`, then later
`ended PID STATUS` (STATUS as `Popen.returncode`: negative for a signal).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import IO, ClassVar, Protocol

from . import local_worker

# How long a finished run waits for its server to reap its last workers and end.
_END_SECONDS = 10.0


class Forked:
    """A worker process the fork server started: its pid, once known, and its end."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.returncode: int | None = None
        # Set when the server itself ended before this worker's end was reported.
        self.server_end: str | None = None
        self._known = threading.Event()
        self._ended = threading.Event()

    def wait_started(self) -> int:
        """The worker's pid; OSError if the server could not start it."""
        self._known.wait()
        if self.pid is None:
            raise OSError(self.server_end or "the fork server ended")
        return self.pid

    def wait(self) -> int:
        """The worker's exit status, as `Popen.wait` gives it."""
        self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.pid is not None and not self._ended.is_set():
            with suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def started(self, pid: int) -> None:
        self.pid = pid
        self._known.set()

    def ended(self, returncode: int, server_end: str | None = None) -> None:
        self.returncode = returncode
        self.server_end = server_end
        self._known.set()
        self._ended.set()


class _Server(Protocol):
    """What the run holds of its server: a `subprocess.Popen`, or `_ForkedServer`."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def wait(self) -> int: ...

    def kill(self) -> None: ...


class _ForkedServer:
    """The server forked from this process, held as a `Popen` would hold it."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        with suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)


def _forked_here() -> _ForkedServer | None:
    """The server, forked from this process, or None when this process runs
    threads besides the one here (a fork would copy their locks as they are)."""
    if threading.active_count() > 1:
        return None
    local_worker.import_worker()
    requests_read, requests = os.pipe()
    answers, answers_write = os.pipe()
    parent = os.getpid()
    # What the buffers hold is the launcher's to write, not the server's.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        local_worker.serve_forked(parent, requests_read, answers_write)
    os.close(requests_read)
    os.close(answers_write)
    return _ForkedServer(pid, os.fdopen(requests, "wb"), os.fdopen(answers, "rb"))


def _started(from_here: bool) -> _Server:
    """A new server: forked from here if asked and safe, else a new Python."""
    forked = _forked_here() if from_here else None
    if forked is not None:
        return forked
    return subprocess.Popen(
        [sys.executable, "-m", local_worker.__name__, local_worker.SERVE_FORKS_FLAG],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


class ForkServer:
    """One run's fork server, found by its `token` (the workers' environment
    names it; see `watched_workers.WatchedRunner`)."""

    _running: ClassVar[dict[str, ForkServer]] = {}

    def __init__(self) -> None:
        self.token = f"fork-server-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._process: _Server | None = None
        self._reader: threading.Thread | None = None
        self._asked: collections.deque[Forked] = collections.deque()
        self._live: dict[int, Forked] = {}
        self._ended: str | None = None

    @classmethod
    def of(cls, token: str) -> ForkServer:
        server = cls._running.get(token)
        if server is None:
            raise OSError(f"no fork server {token} is running")
        return server

    @contextmanager
    def running(self, from_here: bool = False) -> Iterator[ForkServer]:
        """Starts the server for the time of a run, unless an outer `running()`
        already did (the launcher, before the run starts threads), then ends it
        and waits for it. Entered from the thread that runs the run: the server
        dies with it. `from_here`: forked from this process, when this process
        runs nothing but the run (the command line's) and no other thread."""
        if self.token in ForkServer._running:
            yield self
            return
        self._ended = None
        self._process = _started(from_here)
        self._reader = threading.Thread(target=self._read, name="fork_server", daemon=True)
        self._reader.start()
        ForkServer._running[self.token] = self
        try:
            yield self
        finally:
            ForkServer._running.pop(self.token, None)
            self._close()

    def fork(self, env: Mapping[str, str]) -> Forked:
        """A new worker with `env` as its whole environment (OSError if the
        server is gone)."""
        forked = Forked()
        request = json.dumps(dict(env)).encode("utf-8") + b"\n"
        with self._lock:
            process = self._process
            if process is None or process.stdin is None or self._ended is not None:
                raise OSError(self._ended or "the fork server is not running")
            self._asked.append(forked)
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except OSError:
                self._asked.remove(forked)
                raise
        forked.wait_started()
        return forked

    def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            what, pid, *status = line.split()
            with self._lock:
                if what == b"started":
                    forked = self._asked.popleft()
                    self._live[int(pid)] = forked
                    forked.started(int(pid))
                elif what == b"ended":
                    ended = self._live.pop(int(pid), None)
                    if ended is not None:
                        ended.ended(int(status[0]))
        # The server ended: so did every worker it had (they die with it).
        returncode = process.wait()
        from .watched_workers import how_it_ended

        fate = f"the fork server {process.pid} of the local runner {how_it_ended(returncode)}"
        with self._lock:
            self._ended = fate
            orphans = [*self._asked, *self._live.values()]
            self._asked.clear()
            self._live.clear()
        for forked in orphans:
            forked.ended(-signal.SIGKILL, fate)

    def _close(self) -> None:
        process, reader = self._process, self._reader
        if process is None or reader is None:
            return
        with self._lock, suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        # The reader reaps the server once it has ended.
        reader.join(_END_SECONDS)
        if reader.is_alive():
            process.kill()  # its workers die with it
            reader.join()
        assert process.stdout is not None
        process.stdout.close()
