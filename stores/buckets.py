"""S3 and GCS buckets: the one place their clients are made and their errors
are put in one line.

Inputs, outputs and the stores in a bucket all reach object storage through
here (`bucket_of`, `open_object`):

- clients come from each cloud's standard environment, as the SDKs read it:
  boto3's (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL` for an
  S3-compatible store, ...) and Google's application default credentials
  (`GOOGLE_APPLICATION_CREDENTIALS`, `STORAGE_EMULATOR_HOST` for an
  emulator); one client per process and cloud, made when first used;
- every call has a bounded connection timeout and a few retries, so an
  endpoint nobody answers fails in seconds rather than after the SDKs'
  default minutes;
- every failure of theirs becomes a `CloudError` whose message says the cause
  in one line: no credentials, credentials refused, access denied, no such
  bucket, endpoint unreachable. A missing object is a `FileNotFoundError`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from profile_import.core.locations import parse

# Seconds to open a connection and to wait for each answer, and how many
# times a call is tried in all: an endpoint that refuses or never answers
# fails within a few connection timeouts.
CONNECT_SECONDS = 10.0
READ_SECONDS = 60.0
ATTEMPTS = 3
# How long a GCS call retries its transient failures, in all.
GCS_RETRY_SECONDS = 20.0

SERVICES = {"s3": "S3", "gs": "GCS"}

# A pointer's version, for a conditional replace: an ETag or a generation.
Token = Any
ABSENT = "absent"  # the `expected` token of an object that must not exist yet


class CloudError(OSError):
    """A call to S3 or GCS that failed; its message is the cause, in one line."""


class Precondition(Exception):
    """A conditional write or delete found another version than expected."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    url: str
    size: int | None
    modified_ns: int | None


# One client per process and cloud: clients are not shared across a fork.
_clients: dict[tuple[int, str], Any] = {}


def client(scheme: str) -> Any:
    """This process's client for `s3` or `gs`. Raises `CloudError` (no credentials)."""
    key = (os.getpid(), scheme)
    if key not in _clients:
        with errors(scheme, ""):
            _clients[key] = _s3_client() if scheme == "s3" else _gcs_client()
    return _clients[key]


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_SECONDS,
        read_timeout=READ_SECONDS,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
    )
    return boto3.client("s3", config=config)


def _gcs_client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined]

    return storage.Client()


def _gcs_call() -> dict[str, Any]:
    """The timeout and retry of every GCS call."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return {
        "timeout": (CONNECT_SECONDS, READ_SECONDS),
        "retry": DEFAULT_RETRY.with_timeout(GCS_RETRY_SECONDS),
    }


def _s3_endpoint() -> str:
    found = _clients.get((os.getpid(), "s3"))
    return str(found.meta.endpoint_url) if found is not None else "its endpoint"


def _gcs_endpoint() -> str:
    return os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"


def describe(error: BaseException, scheme: str, bucket: str) -> str:
    """The cause of a failed S3 or GCS call, in one line."""
    for seen in _chain(error):
        line = _describe_s3(seen, bucket) if scheme == "s3" else _describe_gcs(seen, bucket)
        if line is not None:
            return line
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{SERVICES.get(scheme, scheme)} failed: {first[:300]}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then what caused it (smart-open wraps the SDKs' errors)."""
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        yield seen
        backend = getattr(seen, "backend_error", None)
        if isinstance(backend, BaseException):
            yield backend
        seen = seen.__cause__ or seen.__context__


_S3_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}


def _describe_s3(error: BaseException, bucket: str) -> str | None:
    try:
        from botocore import exceptions as boto
    except ImportError:  # no S3 support installed
        return None
    if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError):
        return (
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE"
        )
    if isinstance(error, boto.ConnectTimeoutError | boto.ReadTimeoutError):
        return f"cannot reach S3 at {_s3_endpoint()}: no answer after {ATTEMPTS} tries"
    if isinstance(error, boto.EndpointConnectionError | boto.ConnectionClosedError):
        return f"cannot reach S3 at {_s3_endpoint()}: {_reason(error)} after {ATTEMPTS} tries"
    if isinstance(error, boto.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return f"S3 bucket {bucket} does not exist"
        if code in _S3_REFUSED:
            return (
                f"S3 refused the credentials ({code}): check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if code == "AccessDenied":
            return f"S3 denied access to bucket {bucket} (AccessDenied)"
        if status == 403 or code == "403":
            # An answer without a body (HEAD) does not say which.
            return f"S3 denied access to bucket {bucket} (403: wrong credentials or no permission)"
        message = str(details.get("Message", "")).strip()
        return f"S3 error {code or status}" + (f": {message}" if message else "")
    if isinstance(error, boto.BotoCoreError):
        return f"S3 failed: {str(error).strip()[:300]}"
    return None


def _describe_gcs(error: BaseException, bucket: str) -> str | None:
    try:
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth
    except ImportError:  # no GCS support installed
        return None
    if isinstance(error, auth.DefaultCredentialsError):
        return (
            "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS, or run "
            "`gcloud auth application-default login`"
        )
    if isinstance(error, auth.RefreshError):
        return f"Google Cloud refused the credentials: {_reason(error)}"
    if isinstance(error, auth.TransportError):
        return f"cannot reach Google's sign-in service: {_reason(error)}"
    if isinstance(error, api.RetryError):
        cause = error.cause
        return None if cause is None else _describe_gcs(cause, bucket)
    status = _http_status(error)
    if status == 401:
        return "GCS refused the credentials (401): check GOOGLE_APPLICATION_CREDENTIALS"
    if status == 403:
        return f"GCS denied access to bucket {bucket} (403)"
    if status == 404:
        return f"GCS bucket {bucket} does not exist"
    if isinstance(error, api.GoogleAPICallError):
        return f"GCS error {error.code}: {_reason(error)}"
    if isinstance(error, requests.Timeout):
        return f"cannot reach GCS at {_gcs_endpoint()}: no answer"
    if isinstance(error, requests.ConnectionError):
        return f"cannot reach GCS at {_gcs_endpoint()}: {_reason(error)}"
    return None


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of a GCS failure: the API's errors carry it as `code`,
    the uploads' and downloads' on their `response`."""
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return code
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _reason(error: BaseException) -> str:
    """The last words of an error's message, where the SDKs put the cause."""
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "timed out"):
        if known in text:
            return known.lower()
    if "Could not connect" in text:
        return "connection refused"
    first = (text.strip().splitlines() or [type(error).__name__])[0]
    return first[:300]


@contextmanager
def errors(scheme: str, bucket: str) -> Iterator[None]:
    """Turns what an S3 or GCS call raises into a `CloudError`; a missing
    object (`FileNotFoundError`), a `Precondition` and our own errors pass."""
    try:
        yield
    except (CloudError, FileNotFoundError, Precondition):
        raise
    except Exception as e:
        raise CloudError(describe(e, scheme, bucket)) from e


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


def describe_missing_bucket(scheme: str, name: str) -> str:
    return f"{SERVICES['gs' if scheme == 'gcs' else scheme]} bucket {name} does not exist"


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
        return bool(self.bucket.exists(**_gcs_call()))

    def get(self, key: str) -> tuple[bytes, Token]:
        from google.api_core.exceptions import NotFound

        with self._errors():
            blob = self.bucket.blob(key)
            try:
                data = blob.download_as_bytes(**_gcs_call())
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
                blob.upload_from_string(data, **condition, **_gcs_call())
            except PreconditionFailed as e:
                raise Precondition(key) from e
            return blob.generation

    def delete(self, key: str, expected: Token | None = None) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        condition = {} if expected is None else {"if_generation_match": expected}
        with self._errors():
            try:
                self.bucket.blob(key).delete(**condition, **_gcs_call())
            except NotFound:
                pass
            except PreconditionFailed as e:
                raise Precondition(key) from e

    def stat(self, key: str) -> ObjectInfo:
        with self._errors():
            blob = self.bucket.get_blob(key, **_gcs_call())
        if blob is None:
            raise self._missing(key, FileNotFoundError(self.url(key)))
        return ObjectInfo(self.url(key), int(blob.size), _ns(blob.updated))

    def list_keys(self, prefix: str, delimiter: bool) -> tuple[list[str], list[str]]:
        with self._errors():
            blobs = self.client.list_blobs(
                self.name, prefix=prefix, delimiter="/" if delimiter else None, **_gcs_call()
            )
            keys = [b.name for b in blobs]
            return keys, sorted(blobs.prefixes)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        with self._errors():
            return [
                ObjectInfo(self.url(b.name), b.size, _ns(b.updated))
                for b in self.client.list_blobs(self.name, prefix=prefix, **_gcs_call())
            ]

    def transport_params(self) -> dict[str, Any]:
        return {"client": self.client, "blob_open_kwargs": _gcs_call()}


def bucket_of(scheme: str, name: str) -> Bucket:
    """The bucket `name` on `s3` or `gs` (`gcs` is `gs`)."""
    if scheme == "s3":
        return S3Bucket(name)
    if scheme in ("gs", "gcs"):
        return GCSBucket(name)
    raise CloudError(f"{scheme}:// is not an object store: use s3:// or gs://")


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
    bucket = bucket_of(scheme, name)
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
