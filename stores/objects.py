"""The snapshot store's files in a bucket: `s3://bucket/prefix` or `gs://bucket/prefix`.

Objects are written whole (one PUT, or a multipart upload that completes or
leaves nothing), so no temporary names or renames are needed. The version
pointer (`CURRENT`) is replaced by a conditional write on the version read
(S3 `If-Match` on its ETag, `If-None-Match: *` for the first; GCS
`ifGenerationMatch`): two runs that started from the same version can never
both publish. The lock is a lease object (`stores.lease`).

The clients, their timeouts and their errors are `stores.buckets`'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from profile_import.core.locations import parse

from .buckets import ABSENT, Precondition, Token, open_bucket, open_object
from .files import Files, PointerMoved
from .lease import Lease


class ObjectFiles(Files):
    def __init__(self, url: str) -> None:
        self.url = url
        location = parse(url, "store")
        prefix = location.path
        self.bucket = open_bucket(location.scheme, location.bucket)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._fence: Any = None

    def _key(self, path: str) -> str:
        return self.prefix + path.strip("/")

    def join(self, *parts: str) -> str:
        return f"{self.bucket.scheme}://{self.bucket.name}/{self._key('/'.join(parts))}"

    def open_read(self, path: str) -> Any:
        self.size(path)  # FileNotFoundError before a stream is opened
        return open_object(self.join(path), "rb")

    def read_bytes(self, path: str) -> bytes:
        return self.bucket.get(self._key(path))[0]

    @contextmanager
    def write_stream(self, path: str) -> Iterator[Any]:
        # smart-open completes the upload on close, and aborts it on an error.
        with open_object(self.join(path), "wb") as out:
            yield out

    def write_atomic(self, path: str, data: bytes) -> None:
        self.bucket.put(self._key(path), data)

    def size(self, path: str) -> int:
        return self.bucket.size(self._key(path))

    def exists(self, path: str) -> bool:
        try:
            self.size(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        keys, prefixes = self.bucket.list_keys(self._key(path) + "/", delimiter=True)
        return bool(keys or prefixes)

    def listdir(self, path: str) -> list[str]:
        base = self._key(path) + "/" if path.strip("/") else self.prefix
        keys, prefixes = self.bucket.list_keys(base, delimiter=True)
        names = [k[len(base) :] for k in keys] + [p[len(base) :].rstrip("/") for p in prefixes]
        return sorted(n for n in names if n)

    def remove(self, path: str) -> None:
        self.bucket.delete(self._key(path))

    def remove_tree(self, path: str) -> None:
        keys, _ = self.bucket.list_keys(self._key(path) + "/", delimiter=False)
        self.bucket.delete_many(keys)
        if self.exists(path):
            self.remove(path)

    def read_pointer(self, path: str) -> tuple[bytes, Token]:
        return self.bucket.get(self._key(path))

    def write_pointer(
        self, path: str, data: bytes, expected: Token | None, fence: Callable[[], None]
    ) -> None:
        fence()
        try:
            self.bucket.put(self._key(path), data, ABSENT if expected is None else expected)
        except Precondition as e:
            raise PointerMoved(
                f"store {self.url}: another run published while this one ran; nothing was published"
            ) from e

    def lock(self, timeout: float, what: str) -> AbstractContextManager[None]:
        lease = Lease(self.bucket, self._key(".lock"), what)
        # Travels with the store to the worker that publishes.
        self._fence = lease.fence
        return lease.held(timeout)

    def fence(self) -> None:
        if self._fence is not None:
            self._fence.check()
