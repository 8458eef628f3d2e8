"""Where a run writes its report, its rejects and its changes: a local file
(a path or a `file://` URL), an object (`s3://`, `gs://` or `gcs://`, through
smart-open) or standard output (`-`); anything else (`https://`, `ftp://`)
is refused before the run starts (`core.locations`).

Every output goes through this one layer, and each is written whole or not
at all, never truncated first: a local file as a temporary file in the same
folder, renamed over the destination once complete and durable; an object
uploaded once, at the end (an unfinished upload leaves no object). So a run
killed at any moment, or one that fails while writing, leaves the previous
content of the destination, or nothing; and a run that writes nothing there
(`ALREADY_APPLIED` writes no rejects) leaves it as it was.

Before the run starts, each location is proven writable without touching
what is there: its folder exists and accepts a temporary file (removed at
once), its bucket exists. A location that cannot be written is a usage error
(exit 2) with nothing run; finding it out after a publish would leave a run
that changed the store and could only say so on standard output.

A temporary file is locked (`fcntl.flock`) by the process writing it; the
check of a destination removes the ones of that destination whose lock it
can take, left by a killed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import stat
import sys
import uuid
from collections.abc import Iterator
from typing import IO

from profile_import.core.locations import Location, LocationError, parse
from profile_import.stores.buckets import describe_missing_bucket, open_bucket, open_object
from profile_import.stores.failpoints import OUTPUT_WRITTEN, failpoint

STDOUT = "-"


class OutputError(Exception):
    """An output location that cannot be written."""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_stream(path: str) -> bool:
    """A destination that is not a file to replace (`/dev/null`, `/dev/stdout`, a FIFO)."""
    if path.startswith(("/dev/", "/proc/")):
        return True  # /dev/stdout redirected to a file is still the caller's stream
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # not there yet: a file to create


def _temp_pattern(target: str) -> tuple[str, str]:
    """The temporary files of `target`: (their folder, a glob of their names)."""
    folder, name = os.path.split(target)
    return folder, f".{glob.escape(name)}.*.tmp"


def _create_temp(target: str) -> tuple[str, int]:
    """A new temporary file beside `target`, locked by this process."""
    folder, name = os.path.split(target)
    while True:
        path = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another run's check may have taken it for a dead run's before
            # the lock was held: then it is gone, and another name is drawn.
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return path, fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(fd)


def remove_dead_temps(target: str) -> list[str]:
    """Removes the temporary files of `target` that no live process writes."""
    folder, pattern = _temp_pattern(target)
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass  # written now, or gone
        finally:
            os.close(fd)
    return removed


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _replacing(location: str) -> Iterator[IO[bytes]]:
    """A stream to a temporary file that replaces `location` once complete."""
    target = os.path.realpath(location)  # a link's target is what gets replaced
    path, fd = _create_temp(target)
    try:
        with contextlib.suppress(OSError):  # a replaced file keeps its permissions
            os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, "wb", closefd=False) as out:
            yield out
            out.flush()
            os.fsync(fd)
        failpoint(OUTPUT_WRITTEN)
        os.replace(path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)
    _fsync_folder(os.path.dirname(target))


def _check_bucket(target: Location) -> None:
    """The bucket of `target` exists and can be reached."""
    if not open_bucket(target.scheme, target.bucket).exists():
        raise OutputError(describe_missing_bucket(target.scheme, target.bucket))


def target_of(option: str, location: str | None) -> Location | None:
    """Where an output goes, parsed once; None for standard output or none.
    Raises `OutputError` for a location no output can be written to."""
    if location is None or location == STDOUT:
        return None
    try:
        return parse(location, "output")
    except LocationError as e:
        raise OutputError(f"{option} {location}: {e}") from e


class Output:
    """One output of a run: `location` (as the user gave it) None means not
    asked for; `target` is where it is written, None for standard output or
    a location no output can be written to (`check` says why)."""

    def __init__(self, option: str, location: str | None) -> None:
        self.option = option
        self.location = location
        self.target: Location | None = None
        self._refused: OutputError | None = None
        try:
            self.target = target_of(option, location)
        except OutputError as e:
            self._refused = e

    @property
    def is_stdout(self) -> bool:
        return self.location == STDOUT

    def __str__(self) -> str:
        return "standard output" if self.is_stdout else str(self.location)

    def check(self) -> None:
        """Proves the location writable, leaving what is there as it is."""
        if self._refused is not None:
            raise self._refused
        target = self.target
        if target is None:
            return
        where = f"{self.option} {self.location}"
        if target.is_object:
            try:
                _check_bucket(target)
            except OutputError as e:
                raise OutputError(f"{where}: {e}") from e
            except Exception as e:
                raise OutputError(f"{where}: cannot write: {_first_line(e)}") from e
            return
        location = target.path
        if os.path.isdir(location):
            raise OutputError(f"{where}: is a directory")
        if _is_stream(location):
            if not os.access(location, os.W_OK):
                raise OutputError(f"{where}: cannot write: permission denied")
            return
        real = os.path.realpath(location)
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):
            raise OutputError(f"{where}: no folder {os.path.dirname(os.path.abspath(location))}")
        try:
            remove_dead_temps(real)
            path, fd = _create_temp(real)
            os.close(fd)
            os.unlink(path)
        except OSError as e:
            raise OutputError(f"{where}: cannot write: {e.strerror or e}") from e

    def write(self, data: bytes) -> None:
        with self.open() as out:
            out.write(data)

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """A binary stream to the location: what it received replaces what was
        there once the block ends without an error, and nothing does otherwise."""
        if self.is_stdout:
            out = sys.stdout.buffer
            yield out
            out.flush()
            return
        if self._refused is not None:
            raise self._refused
        target = self.target
        assert target is not None
        location = target.url
        if target.is_object:
            # The upload completes when the stream closes without an error,
            # and is abandoned otherwise: the object appears whole or not at all.
            with open_object(location, "wb", compression="infer_from_extension") as remote:
                yield remote
                failpoint(OUTPUT_WRITTEN)
        elif _is_stream(location):
            with open(location, "ab") as stream:
                yield stream
        else:
            with _replacing(location) as local:
                yield local
