"""Streams on objects through smart-open, whose failures are `CloudError`s."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .bucket import open_bucket, split_url
from .errors import CloudError, describe


def open_object(
    url: str,
    mode: str,
    *,
    compression: str = "disable",
    transport_params: dict[str, Any] | None = None,
) -> Any:
    """A stream on the object at `url` (`s3://`, `gs://`, `gcs://`) through
    smart-open, with this process's client, whose failures are `CloudError`s."""
    import smart_open  # imported when used: with its clients it takes a while

    scheme, name, key = split_url(url)
    bucket = open_bucket(scheme, name)
    _bound_smart_open_retries()
    with bucket._errors():
        params = transport_params or bucket.transport_params()
        try:
            stream = smart_open.open(
                bucket.url(key), mode, compression=compression, transport_params=params
            )
        except FileNotFoundError as e:
            raise bucket._missing(key, e) from e
    return TranslatedStream(stream, lambda e: CloudError(describe(e, scheme, name)))


def _bound_smart_open_retries() -> None:
    """smart-open retries an S3 connection failure six times, ten seconds
    apart, on top of the client's own retries: once is enough here."""
    import smart_open.s3

    smart_open.s3.RETRY.attempts = 1


class TranslatedStream(io.IOBase):
    """A stream whose I/O failures are raised as `CloudError`s."""

    def __init__(self, inner: Any, translate: Callable[[Exception], CloudError]) -> None:
        self._inner = inner
        self._translate = translate

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (CloudError, FileNotFoundError):
            raise
        except Exception as e:
            raise self._translate(e) from e

    def read(self, size: int = -1) -> bytes:
        with self._errors():
            data: bytes = self._inner.read(size)
            return data

    def readinto(self, buffer: Any) -> int:
        with self._errors():
            count: int = self._inner.readinto(buffer)
            return count

    def readline(self, size: int | None = -1) -> bytes:
        with self._errors():
            line: bytes = self._inner.readline(-1 if size is None else size)
            return line

    def write(self, data: Any) -> int:
        with self._errors():
            count: int = self._inner.write(data)
            return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._errors():
            position: int = self._inner.seek(offset, whence)
            return position

    def tell(self) -> int:
        return int(self._inner.tell())

    def flush(self) -> None:
        if self._inner.closed:  # closing this stream flushes it after its inner one
            return
        with self._errors():
            self._inner.flush()

    def close(self) -> None:
        if not self.closed:
            try:
                with self._errors():
                    self._inner.close()
            finally:
                super().close()

    def __enter__(self) -> TranslatedStream:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if error is None:
            self.close()
            return
        # On a failure a writer discards what it wrote (smart-open aborts
        # the upload) rather than complete it.
        try:
            with self._errors():
                self._inner.__exit__(kind, error, trace)
        finally:
            super().close()

    def readable(self) -> bool:
        return bool(self._inner.readable())

    def writable(self) -> bool:
        return bool(self._inner.writable())

    def seekable(self) -> bool:
        return bool(self._inner.seekable())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
