"""The local runner's fork server (`runners/fork_server.py`): forked from the
command line's launcher when it has no other thread, else a new Python;
either starts workers and reports their ends. Each case runs in a new
Python, whose threads the test controls (pytest's own process may run some)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Starts a server (after a thread of its own, if asked), describes it, has it
# start a worker, and reports how that worker ended: without the variables Beam's
# SDK worker needs to reach its runner, a worker fails at once, with status 1.
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    from profile_import.runners.fork_server import ForkServer

    held = open(sys.argv[2], "rb")  # a file of the launcher's, not the server's
    signal.signal(signal.SIGTERM, lambda *_: None)  # a handler of the launcher's
    if sys.argv[1] == "thread":
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
    server = ForkServer()
    with server.running(from_here=sys.argv[1] != "api"):
        pid = server._process.pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().split(b"\\0")[:-1]
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            caught = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
        files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        worker = server.fork({"PATH": os.environ["PATH"]})
        worker_pid, returncode = worker.wait_started(), worker.wait()
    print(json.dumps({
        "command": [c.decode() for c in command],
        "mine": [os.fsdecode(c) for c in [sys.executable, *sys.orig_argv[1:]]],
        "catches_sigterm": bool(caught & (1 << (signal.SIGTERM - 1))),
        "holds_mine": sys.argv[2] in files,
        "worker": worker_pid != pid,
        "returncode": returncode,
    }))
    """
)


@pytest.mark.parametrize("launcher", ["none", "thread", "api"])
def test_the_server_is_forked_from_a_launcher_with_no_other_thread(
    tmp_path: pytest.TempPathFactory, launcher: str
) -> None:
    """`none`: the command line's launcher; `thread`: the same with a thread
    of its own; `api`: a caller of the Python API, whose process may hold
    threads nobody can see from Python (gRPC's)."""
    held = os.path.join(str(tmp_path), "store-file")
    with open(held, "wb") as f:
        f.write(b"x")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, launcher, held],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    if launcher == "none":
        # Forked: the launcher's own command line, none of its files, none of its handlers.
        assert seen["command"] == seen["mine"]
    else:
        # A thread could hold a lock a fork copies: a new Python.
        assert seen["command"][1:] == ["-m", "profile_import.runners.local_worker", "--serve-forks"]
    assert not seen["holds_mine"] and not seen["catches_sigterm"]
    assert seen["worker"] and seen["returncode"] == 1


def test_a_server_forked_from_here_ends_with_the_thread_that_started_it() -> None:
    """Killed with SIGKILL, the launcher cannot end its server: Linux does."""
    script = textwrap.dedent(
        """
        import sys
        from profile_import.runners.fork_server import ForkServer

        server = ForkServer()
        with server.running(from_here=True):
            print(server._process.pid, flush=True)
            sys.stdin.read()
        """
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert launcher.stdout is not None
    server = int(launcher.stdout.readline())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = 100
    while deadline and os.path.exists(f"/proc/{server}") and _state(server) not in ("Z", "X"):
        deadline -= 1
        subprocess.run(["sleep", "0.05"], check=True)
    assert deadline, f"the server {server} outlived its launcher"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def test_a_server_ended_with_its_run_starts_anew_for_the_next() -> None:
    script = textwrap.dedent(
        """
        import os
        from profile_import.runners.fork_server import ForkServer

        server = ForkServer()
        for _ in range(2):
            with server.running(from_here=True):
                worker = server.fork({"PATH": os.environ["PATH"]})
                print(server._process.pid, worker.wait(), flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    (first, status_1), (second, status_2) = (line.split() for line in result.stdout.splitlines())
    assert first != second and status_1 == status_2 == "1"
