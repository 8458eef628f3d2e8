"""The snapshot store's files in a bucket: `s3://bucket/prefix` or `gs://bucket/prefix`.

Objects are written whole (one PUT, or a multipart upload that completes or
leaves nothing), so no temporary names or renames are needed. The version
pointer (`CURRENT`) is replaced by a conditional write on the version read
(S3 `If-Match` on its ETag, `If-None-Match: *` for the first; GCS
`ifGenerationMatch`): two runs that started from the same version can never
both publish. The lock is a lease object (`stores.lease`).

Clients come from each cloud's standard environment: boto3's (credentials,
`AWS_PROFILE`, `AWS_ENDPOINT_URL` for an S3-compatible store) and Google's
application default credentials (`STORAGE_EMULATOR_HOST` for an emulator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import smart_open

from .files import Files, PointerMoved, Token


class Precondition(Exception):
    """A conditional write or delete found another version than expected."""


ABSENT = "absent"  # the `expected` token of an object that must not exist yet


class Bucket:
    """The few object operations the store needs, on one bucket."""

    scheme: str
    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._client: Any = None

    # Pickled to the pipeline's workers by name: each builds its own client.
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"])  # type: ignore[misc]

    def get(self, key: str) -> tuple[bytes, Token]:
        """The object's bytes and version. Raises `FileNotFoundError`."""
        raise NotImplementedError

    def put(self, key: str, data: bytes, expected: Token | None = None) -> Token:
        """Writes the object; if `expected` is given, only over that version
        (`ABSENT`: only if there is none). Returns the new version. Raises
        `Precondition`."""
        raise NotImplementedError

    def delete(self, key: str, expected: Token | None = None) -> None:
        raise NotImplementedError

    def size(self, key: str) -> int:
        raise NotImplementedError

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        """(keys, sub-prefixes) under `prefix`."""
        raise NotImplementedError

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)


class S3Bucket(Bucket):
    scheme = "s3"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _code(self, e: Exception) -> str:
        return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))

    def get(self, key: str) -> tuple[bytes, Token]:
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
        except self.client.exceptions.NoSuchKey as e:
            raise FileNotFoundError(f"s3://{self.name}/{key}") from e
        return response["Body"].read(), response["ETag"]

    def put(self, key: str, data: bytes, expected: Token | None = None) -> Token:
        conditions: dict[str, str] = {}
        if expected == ABSENT:
            conditions["IfNoneMatch"] = "*"
        elif expected is not None:
            conditions["IfMatch"] = expected
        try:
            response = self.client.put_object(Bucket=self.name, Key=key, Body=data, **conditions)
        except Exception as e:
            if self._code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise Precondition(key) from e
            raise
        return response["ETag"]

    def delete(self, key: str, expected: Token | None = None) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def delete_many(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            objects = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects})

    def size(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.name, Key=key)["ContentLength"])
        except Exception as e:
            if self._code(e) in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"s3://{self.name}/{key}") from e
            raise

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        prefixes: list[str] = []
        extra = {"Delimiter": "/"} if delimiter else {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix, **extra):
            keys += [o["Key"] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return keys, prefixes


class GCSBucket(Bucket):
    scheme = "gs"

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage  # type: ignore[attr-defined]

            self._client = storage.Client()
        return self._client

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.name)

    def get(self, key: str) -> tuple[bytes, Token]:
        from google.api_core.exceptions import NotFound

        blob = self.bucket.blob(key)
        try:
            data = blob.download_as_bytes()
        except NotFound as e:
            raise FileNotFoundError(f"gs://{self.name}/{key}") from e
        return data, blob.generation

    def put(self, key: str, data: bytes, expected: Token | None = None) -> Token:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(key)
        condition = (
            {}
            if expected is None
            else {"if_generation_match": 0 if expected == ABSENT else expected}
        )
        try:
            blob.upload_from_string(data, **condition)
        except PreconditionFailed as e:
            raise Precondition(key) from e
        return blob.generation

    def delete(self, key: str, expected: Token | None = None) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        condition = {} if expected is None else {"if_generation_match": expected}
        try:
            self.bucket.blob(key).delete(**condition)
        except NotFound:
            pass
        except PreconditionFailed as e:
            raise Precondition(key) from e

    def size(self, key: str) -> int:
        blob = self.bucket.get_blob(key)
        if blob is None:
            raise FileNotFoundError(f"gs://{self.name}/{key}")
        return int(blob.size)

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        blobs = self.client.list_blobs(
            self.name, prefix=prefix, delimiter="/" if delimiter else None
        )
        keys = [b.name for b in blobs]
        return keys, sorted(blobs.prefixes)


def bucket_of(scheme: str, name: str) -> Bucket:
    return S3Bucket(name) if scheme == "s3" else GCSBucket(name)


class ObjectFiles(Files):
    def __init__(self, url: str) -> None:
        self.url = url
        scheme, rest = url.split("://", 1)
        name, _, prefix = rest.partition("/")
        if not name:
            raise ValueError(f"store {url}: no bucket")
        self.bucket = bucket_of(scheme, name)
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._fence: Any = None

    def _key(self, path: str) -> str:
        return self.prefix + path.strip("/")

    def join(self, *parts: str) -> str:
        return f"{self.bucket.scheme}://{self.bucket.name}/{self._key('/'.join(parts))}"

    def open_read(self, path: str) -> Any:
        self.size(path)  # FileNotFoundError before a stream is opened
        stream = smart_open.open(self.join(path), "rb", compression="disable")
        return stream

    def read_bytes(self, path: str) -> bytes:
        return self.bucket.get(self._key(path))[0]

    @contextmanager
    def write_stream(self, path: str) -> Iterator[Any]:
        # smart-open completes the upload on close, and aborts it on an error.
        with smart_open.open(self.join(path), "wb", compression="disable") as out:
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
        from .lease import Lease

        lease = Lease(self.bucket, self._key(".lock"), what)
        # Travels with the store to the worker that publishes.
        self._fence = lease.fence
        return lease.held(timeout)

    def fence(self) -> None:
        if self._fence is not None:
            self._fence.check()
