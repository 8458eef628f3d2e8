"""The file operations of the snapshot store, on a local folder or a bucket.

`stores.snapshot` has one logic; what differs between a POSIX folder and an
object store lives here, behind `Files` (paths are relative to the store's
root, with `/`):

- writing a file whole or not at all: a temporary file, fsync, rename
  locally; one PUT (or a multipart upload, complete or absent) on objects;
- replacing the version pointer: a rename under the store's `flock`
  locally; a conditional write on objects (`If-Match` on the ETag read, or
  `If-None-Match: *` for the first; GCS `ifGenerationMatch`), so two
  writers can never both publish on the same parent;
- the lock: `flock` locally, a lease object on a bucket (`stores.lease`).

`ObjectFiles` is in `stores.objects`; `stores.folders` opens either.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from . import locking
from .base import StoreError
from .buckets import Token


class PointerMoved(StoreError):
    """The pointer is not the one read: another writer published meanwhile."""


class Files:
    """What the snapshot store does with files. Missing files raise
    `FileNotFoundError`; listing a missing folder gives nothing."""

    url: str

    def join(self, *parts: str) -> str:
        """Where a file is, as a path or URL (for the pipeline and messages)."""
        raise NotImplementedError

    def open_read(self, path: str) -> Any:
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        with self.open_read(path) as f:
            data: bytes = f.read()
            return data

    def write_stream(self, path: str) -> AbstractContextManager[Any]:
        """A raw binary writer whose content appears at `path` whole, when
        the block ends without an error, and durable; or not at all."""
        raise NotImplementedError

    def write_atomic(self, path: str, data: bytes) -> None:
        with self.write_stream(path) as out:
            out.write(data)

    def size(self, path: str) -> int:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def isdir(self, path: str) -> bool:
        raise NotImplementedError

    def listdir(self, path: str) -> list[str]:
        """The names directly in a folder (files and sub-folders)."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def remove_tree(self, path: str) -> None:
        raise NotImplementedError

    def makedirs(self, path: str) -> None:
        """Folders exist only on disks: a no-op on objects."""

    def sync_dir(self, path: str) -> None:
        """Makes a folder's new names durable (disks only)."""

    def read_pointer(self, path: str) -> tuple[bytes, Token]:
        """The pointer's content and its version, for `write_pointer`."""
        raise NotImplementedError

    def write_pointer(
        self, path: str, data: bytes, expected: Token | None, fence: Callable[[], None]
    ) -> None:
        """Replaces the pointer if it is still `expected` (None: absent);
        `fence` raises if this writer may no longer publish. Raises
        `PointerMoved`."""
        raise NotImplementedError

    def lock(self, timeout: float, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def fence(self) -> None:
        """Raises `StoreError` if the lock held has been lost (a lease taken over)."""

    @property
    def is_local(self) -> bool:
        return False


class LocalFiles(Files):
    """A folder on this machine: what the snapshot store always did."""

    def __init__(self, root: str, url: str) -> None:
        self.root = os.path.abspath(root)
        self.url = url

    @property
    def is_local(self) -> bool:
        return True

    def join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def open_read(self, path: str) -> Any:
        return open(self.join(path), "rb", buffering=0)

    def read_bytes(self, path: str) -> bytes:
        with open(self.join(path), "rb") as f:
            return f.read()

    @contextmanager
    def write_stream(self, path: str) -> Iterator[Any]:
        final = self.join(path)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb", buffering=0) as raw:
                yield raw
                os.fsync(raw.fileno())
        except BaseException:
            with suppress(OSError):
                os.remove(tmp)
            raise
        os.replace(tmp, final)

    def write_atomic(self, path: str, data: bytes) -> None:
        final = self.join(path)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.sync_dir(os.path.dirname(path))

    def size(self, path: str) -> int:
        return os.stat(self.join(path)).st_size

    def exists(self, path: str) -> bool:
        return os.path.exists(self.join(path))

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.join(path))

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(self.join(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove(self, path: str) -> None:
        os.remove(self.join(path))

    def remove_tree(self, path: str) -> None:
        target = self.join(path)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with suppress(FileNotFoundError):
                os.remove(target)

    def makedirs(self, path: str) -> None:
        os.makedirs(self.join(path), exist_ok=True)

    def sync_dir(self, path: str) -> None:
        fd = os.open(self.join(path) if path else self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_pointer(self, path: str) -> tuple[bytes, Token]:
        return self.read_bytes(path), None

    def write_pointer(
        self, path: str, data: bytes, expected: Token | None, fence: Callable[[], None]
    ) -> None:
        # The run holds the store's flock, and checked the pointer under it.
        fence()
        self.write_atomic(path, data)

    def lock(self, timeout: float, what: str) -> AbstractContextManager[None]:
        return locking.exclusive(self.join(".lock"), timeout, what)
