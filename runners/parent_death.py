"""A child process that ends with its parent.

Both kinds of worker a local run starts use it: Beam's SDK workers
(`local_worker.py`) and the in-process runner's forked workers
(`pipelines/forked_workers.py`). A launcher killed with SIGKILL cannot stop its
workers itself; without this they would go on, holding memory and staging
buckets for no one. Standard library only, so a freshly forked or started
worker calls it before importing anything heavy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Has Linux send this process SIGKILL when its parent ends; `parent` is
    the parent's pid as the parent knew it before starting this process. If
    the parent ended before the request took effect, this process ends now."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
