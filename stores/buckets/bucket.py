"""One bucket's object operations, on S3 or GCS (`open_bucket`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from profile_import.core.locations import parse

from .clients import gcs_call, made
from .errors import CloudError, Precondition, describe_missing_bucket, errors

# A pointer's version, for a conditional replace: an ETag or a generation.
Token = Any
ABSENT = "absent"  # the `expected` token of an object that must not exist yet


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    url: str
    size: int | None
    modified_ns: int | None


def client(scheme: str) -> Any:
    """This process's client for `s3` or `gs`. Raises `CloudError` (no credentials)."""
    with errors(scheme, ""):
        return made(scheme)


def split_url(url: str) -> tuple[str, str, str]:
    """`s3://bucket/key` → ("s3", "bucket", "key"); `gcs://` is `gs://`."""
    location = parse(url)
    if not location.is_object:
        raise CloudError(f"{url}: not an object URL: use s3://BUCKET/KEY or gs://BUCKET/KEY")
    return location.scheme, location.bucket, location.path


class Bucket:
    """The object operations inputs and stores need, on one bucket."""

    scheme: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._bucket_seen = False

    # Pickled to the pipeline's workers by name: each uses its process's client.
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"])  # type: ignore[misc]

    @property
    def client(self) -> Any:
        return client(self.scheme)

    def url(self, key: str) -> str:
        return f"{self.scheme}://{self.name}/{key}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with errors(self.scheme, self.name):
            yield

    def _missing(self, key: str, error: BaseException) -> FileNotFoundError:
        """No object at `key`: a `FileNotFoundError`, unless the bucket itself
        is missing (the APIs do not always tell one from the other)."""
        if not self._bucket_seen:
            with self._errors():
                exists = self._bucket_exists()
            if not exists:
                raise CloudError(describe_missing_bucket(self.scheme, self.name)) from error
            self._bucket_seen = True
        return FileNotFoundError(self.url(key))

    def _bucket_exists(self) -> bool:
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether the bucket exists (and these credentials may see it)."""
        with self._errors():
            return self._bucket_exists()

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

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def stat(self, key: str) -> ObjectInfo:
        """The object's size and modification time. Raises `FileNotFoundError`."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        return int(self.stat(key).size or 0)

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        """(keys, sub-prefixes) under `prefix`."""
        raise NotImplementedError

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under `prefix`, with its size and modification time."""
        raise NotImplementedError

    def transport_params(self) -> dict[str, Any]:
        """smart-open's parameters for this process's client."""
        raise NotImplementedError


def _ns(when: Any) -> int | None:
    return None if when is None else int(when.timestamp() * 1_000_000_000)


def _s3_code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


_S3_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Bucket(Bucket):
    scheme = "s3"

    def _bucket_exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.name)
        except ClientError as e:
            if _s3_code(e) in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise
        return True

    def get(self, key: str) -> tuple[bytes, Token]:
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                response = self.client.get_object(Bucket=self.name, Key=key)
                return response["Body"].read(), response["ETag"]
            except ClientError as e:
                if _s3_code(e) in _S3_MISSING:
                    raise self._missing(key, e) from e
                raise

    def put(self, key: str, data: bytes, expected: Token | None = None) -> Token:
        conditions: dict[str, str] = {}
        if expected == ABSENT:
            conditions["IfNoneMatch"] = "*"
        elif expected is not None:
            conditions["IfMatch"] = expected
        with self._errors():
            try:
                response = self.client.put_object(
                    Bucket=self.name, Key=key, Body=data, **conditions
                )
            except Exception as e:
                if _s3_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise Precondition(key) from e
                raise
            return response["ETag"]

    def delete(self, key: str, expected: Token | None = None) -> None:
        with self._errors():
            self.client.delete_object(Bucket=self.name, Key=key)

    def delete_many(self, keys: list[str]) -> None:
        with self._errors():
            for start in range(0, len(keys), 1000):
                objects = [{"Key": k} for k in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects})

    def stat(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                head = self.client.head_object(Bucket=self.name, Key=key)
            except ClientError as e:
                if _s3_code(e) in _S3_MISSING:
                    raise self._missing(key, e) from e
                raise
            return ObjectInfo(
                self.url(key), int(head["ContentLength"]), _ns(head.get("LastModified"))
            )

    def _pages(self, prefix: str, delimiter: bool) -> Iterator[dict[str, Any]]:
        extra = {"Delimiter": "/"} if delimiter else {}
        paginator = self.client.get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.name, Prefix=prefix, **extra)

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        prefixes: list[str] = []
        with self._errors():
            for page in self._pages(prefix, delimiter):
                keys += [o["Key"] for o in page.get("Contents", [])]
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        return keys, prefixes

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        with self._errors():
            return [
                ObjectInfo(self.url(o["Key"]), o["Size"], _ns(o.get("LastModified")))
                for page in self._pages(prefix, delimiter=False)
                for o in page.get("Contents", [])
            ]

    def transport_params(self) -> dict[str, Any]:
        return {"client": self.client}


class GCSBucket(Bucket):
    scheme = "gs"

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.name)

    def _bucket_exists(self) -> bool:
        return bool(self.bucket.exists(**gcs_call()))

    def get(self, key: str) -> tuple[bytes, Token]:
        from google.api_core.exceptions import NotFound

        with self._errors():
            blob = self.bucket.blob(key)
            try:
                data = blob.download_as_bytes(**gcs_call())
            except NotFound as e:
                raise self._missing(key, e) from e
            return data, blob.generation

    def put(self, key: str, data: bytes, expected: Token | None = None) -> Token:
        from google.api_core.exceptions import PreconditionFailed

        condition = (
            {}
            if expected is None
            else {"if_generation_match": 0 if expected == ABSENT else expected}
        )
        with self._errors():
            blob = self.bucket.blob(key)
            try:
                blob.upload_from_string(data, **condition, **gcs_call())
            except PreconditionFailed as e:
                raise Precondition(key) from e
            return blob.generation

    def delete(self, key: str, expected: Token | None = None) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        condition = {} if expected is None else {"if_generation_match": expected}
        with self._errors():
            try:
                self.bucket.blob(key).delete(**condition, **gcs_call())
            except NotFound:
                pass
            except PreconditionFailed as e:
                raise Precondition(key) from e

    def stat(self, key: str) -> ObjectInfo:
        with self._errors():
            blob = self.bucket.get_blob(key, **gcs_call())
        if blob is None:
            raise self._missing(key, FileNotFoundError(self.url(key)))
        return ObjectInfo(self.url(key), int(blob.size), _ns(blob.updated))

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        with self._errors():
            blobs = self.client.list_blobs(
                self.name, prefix=prefix, delimiter="/" if delimiter else None, **gcs_call()
            )
            keys = [b.name for b in blobs]
            return keys, sorted(blobs.prefixes)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        with self._errors():
            return [
                ObjectInfo(self.url(b.name), b.size, _ns(b.updated))
                for b in self.client.list_blobs(self.name, prefix=prefix, **gcs_call())
            ]

    def transport_params(self) -> dict[str, Any]:
        # Both bounded: smart-open looks the object up (`get_blob`, with the
        # client's two-minute default retry otherwise) before it opens it.
        return {
            "client": self.client,
            "get_blob_kwargs": gcs_call(),
            "blob_open_kwargs": gcs_call(),
        }


def open_bucket(scheme: str, name: str) -> Bucket:
    """The bucket `name` on `s3` or `gs` (`gcs` is `gs`)."""
    if scheme == "s3":
        return S3Bucket(name)
    if scheme in ("gs", "gcs"):
        return GCSBucket(name)
    raise CloudError(f"{scheme}:// is not an object store: use s3:// or gs://")
