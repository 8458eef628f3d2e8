"""A run's scratch folders in $TMPDIR, removed when the run ends and, when a
killed run could not, by the next run.

Each folder is locked (`fcntl.flock` on the folder itself) by the run that
made it for as long as that run, or a process it forked, lives. A marker file
is written only once the lock is held, so a folder with the marker whose lock
can be taken belongs to no live run: any later run removes it, and runs at
the same time never remove each other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

PREFIX = "profile-import-"
MARKER = ".profile-import-scratch"


def _open_locked(path: str, blocking: bool) -> int | None:
    """A descriptor of the folder `path` holding its lock, or None if it is held."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep(root: str | None = None) -> list[str]:
    """Removes the scratch folders left by runs that no longer live; returns them."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(PREFIX) or not os.path.exists(os.path.join(path, MARKER)):
            continue
        try:
            fd = _open_locked(path, blocking=False)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        if fd is None:
            continue  # a live run's
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def folder(prefix: str = PREFIX, root: str | None = None) -> Iterator[str]:
    """A new scratch folder (in `root`, else $TMPDIR), locked while the caller
    (and what it forks) lives, removed on every exit this process survives."""
    path = tempfile.mkdtemp(prefix=prefix, dir=root)
    try:
        fd = _open_locked(path, blocking=True)
        assert fd is not None
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        with open(os.path.join(path, MARKER), "wb"):
            pass
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
