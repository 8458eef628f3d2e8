"""An exclusive lock on a local store folder, held for a whole run.

`flock` is released by the kernel when its holder dies, so a killed run never
leaves a stale lock behind. The lock file records who holds it, for the error
message of the run that has to wait or give up.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .base import StoreLocked

_POLL_SECONDS = 0.2


@contextmanager
def exclusive(path: str, timeout: float, what: str) -> Iterator[None]:
    """Holds an exclusive lock on `path`; waits up to `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    while True:
        fd = _open(path)
        try:
            _acquire(fd, deadline, what)
        except BaseException:
            os.close(fd)
            raise
        # The holder we waited for may have removed the file (a first run that
        # published nothing leaves nothing): then lock the one at the path now.
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _acquire(fd: int, deadline: float, what: str) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreLocked(
                    f"{what} is in use by another run ({_holder(fd)}); "
                    "try again when it has finished, or pass --lock-timeout SECONDS to wait"
                ) from None
            time.sleep(_POLL_SECONDS)


def _same_file(fd: int, path: str) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since} UTC"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
