"""A worker ends with the process that started it (`runners/parent_death.py`):
real processes, the parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from profile_import.runners.parent_death import die_with_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def _gone(pid: int) -> bool:
    """Whether `pid` has ended: no process, or a zombie its new parent has not reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.02)
    return _gone(pid)


def _parent_with_child(child_dies_with_parent: bool) -> tuple[int, int]:
    """Forks a parent that forks a child; returns (parent, child) once the
    child has made its request (or not) and waits, as a worker would."""
    read_end, write_end = os.pipe()
    parent = os.fork()
    if parent == 0:  # the parent: a child, then nothing until it is killed
        try:
            os.close(read_end)
            me = os.getpid()
            child = os.fork()
            if child == 0:
                try:
                    if child_dies_with_parent:
                        die_with_parent(me)
                    os.write(write_end, f"{os.getpid()}\n".encode())
                    time.sleep(60)
                finally:
                    os._exit(0)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        child = int(f.readline())
    return parent, child


@pytest.mark.parametrize("requested", [True, False], ids=["dies-with-parent", "control"])
def test_a_child_ends_when_its_parent_is_killed(requested: bool) -> None:
    parent, child = _parent_with_child(requested)
    try:
        os.kill(parent, signal.SIGKILL)
        os.waitpid(parent, 0)
        if requested:
            assert _ends_within(child, 10.0), "the child outlived its killed parent"
        else:
            # Without the request an orphan goes on: what the test above rules out.
            assert not _ends_within(child, 1.0)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_ended_before_the_request_ends_at_once() -> None:
    """The parent gone before prctl took effect: the child is an orphan
    already (its parent is no longer the pid it was given) and exits with 1."""
    child = os.fork()
    if child == 0:
        try:
            die_with_parent(os.getppid() + 1)  # not this child's parent
            os._exit(0)
        finally:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 1


def test_a_child_whose_parent_lives_goes_on() -> None:
    child = os.fork()
    if child == 0:
        try:
            die_with_parent(os.getppid())
            os._exit(0)
        finally:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
