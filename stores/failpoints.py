"""Named points where a test can kill the process, to prove a kill there is safe.

`failpoint("publish:before-pointer")` SIGKILLs the process when the environment
variable PROFILE_IMPORT_FAILPOINT names that point, and does nothing otherwise
(the variable is read once, at import). The kill trials of the test suite use
them to stop a real run at each step of a publish.
"""

from __future__ import annotations

import os
import signal

ENV = "PROFILE_IMPORT_FAILPOINT"

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

_ARMED = os.environ.get(ENV)


def failpoint(name: str) -> None:
    """Dies here, as a `kill -9` would, if the environment arms `name`."""
    if _ARMED is not None and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
