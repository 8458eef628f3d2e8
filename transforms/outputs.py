"""Where a run writes its report and its rejects: a local file, a remote URL
(`s3://`, `gs://`, through smart-open) or standard output (`-`).

Both go through this one layer, and both are proven writable before the run
starts by writing there: the report a placeholder saying the run is under
way, the rejects file empty. A location that cannot be written is a usage
error (exit 2) with nothing run; finding it out after a publish would leave a
run that changed the store and could only say so on standard output.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from profile_import.inputs.plan import is_remote

STDOUT = "-"


class OutputError(Exception):
    """An output location that cannot be written."""


class Output:
    """One output of a run: `location` None means not asked for."""

    def __init__(self, option: str, location: str | None) -> None:
        self.option = option
        self.location = location

    @property
    def is_stdout(self) -> bool:
        return self.location == STDOUT

    def __str__(self) -> str:
        return "standard output" if self.is_stdout else str(self.location)

    def check(self, placeholder: bytes) -> None:
        """Proves the location writable by writing `placeholder` there."""
        if self.location is None or self.is_stdout:
            return
        if not is_remote(self.location):
            if os.path.isdir(self.location):
                raise OutputError(f"{self.option} {self.location}: is a directory")
            folder = os.path.dirname(os.path.abspath(self.location))
            if not os.path.isdir(folder):
                raise OutputError(f"{self.option} {self.location}: no folder {folder}")
        try:
            self.write(placeholder)
        except Exception as e:
            raise OutputError(f"{self.option} {self.location}: cannot write: {e}") from e

    def write(self, data: bytes) -> None:
        with self.open() as out:
            out.write(data)

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """A binary stream to the location, complete and durable when closed."""
        assert self.location is not None
        if self.is_stdout:
            out = sys.stdout.buffer
            yield out
            out.flush()
            return
        if is_remote(self.location):
            import smart_open  # imported when used (see inputs.plan.open_raw)

            with smart_open.open(self.location, "wb") as remote:
                yield remote
            return
        with open(self.location, "wb") as local:
            yield local
            local.flush()
            if stat.S_ISREG(os.fstat(local.fileno()).st_mode):  # not /dev/stdout
                os.fsync(local.fileno())
