"""Named points where a test can kill or pause the process, to prove a fault there is safe.

`failpoint("publish:before-pointer")` SIGKILLs the process when the environment
variable PROFILE_IMPORT_FAILPOINT names that point, and does nothing otherwise
(the variables are read once, at import). The kill trials of the test suite use
them to stop a real run at each step of a publish.

PROFILE_IMPORT_PAUSE_AT=POINT with PROFILE_IMPORT_PAUSE_FOLDER=FOLDER pauses
there instead: the process writes FOLDER/paused and waits until FOLDER/resume
exists, once, so that a test does something at that very moment (stops the
store's server) and lets it go on.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "PROFILE_IMPORT_FAILPOINT"
PAUSE_ENV = "PROFILE_IMPORT_PAUSE_AT"
PAUSE_FOLDER_ENV = "PROFILE_IMPORT_PAUSE_FOLDER"
PAUSED = "paused"
RESUME = "resume"
# How long a paused process waits for its test at most: a test that died
# must not leave it paused for ever.
_PAUSE_SECONDS = 300.0

# The points of a publish, in order (stores/snapshot/publish.py).
DATA_WRITTEN = "publish:data-written"  # every bucket file is written, nothing published
BEFORE_POINTER = "publish:before-pointer"  # the manifest is written, CURRENT not replaced
AFTER_POINTER = "publish:after-pointer"  # CURRENT is replaced
POINTS = (DATA_WRITTEN, BEFORE_POINTER, AFTER_POINTER)
# A database store's worker, once it has staged a bucket's changes (stores/sqlite.py).
STAGED = "stage:bucket-staged"
# While the pipeline writes: one bucket file is written, the others not yet.
BUCKET_WRITTEN = "write:bucket-written"
# An output (rejects, report) is written in full, not yet in its place
# (transforms/steps/outputs.py).
OUTPUT_WRITTEN = "output:written"
# An input's lines are about to be read to be checked (inputs/lines.py).
READING = "read:lines"

_ARMED = os.environ.get(ENV)
_PAUSE_POINT = os.environ.get(PAUSE_ENV)
_PAUSE_FOLDER = os.environ.get(PAUSE_FOLDER_ENV)


def pause_at(point: str, folder: str) -> dict[str, str]:
    """The environment that pauses a run at `point`, told through `folder`."""
    return {PAUSE_ENV: point, PAUSE_FOLDER_ENV: folder}


def failpoint(name: str) -> None:
    """Dies here, as a `kill -9` would, if the environment arms `name`; or
    pauses here, if the environment asks for a pause at `name`."""
    if _ARMED is not None and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
    if _PAUSE_FOLDER and name == _PAUSE_POINT:
        _pause(_PAUSE_FOLDER)


def _pause(folder: str) -> None:
    resume = os.path.join(folder, RESUME)
    if os.path.exists(resume):
        return  # paused once already
    with open(os.path.join(folder, PAUSED), "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + _PAUSE_SECONDS
    while not os.path.exists(resume) and time.monotonic() < deadline:
        time.sleep(0.05)
