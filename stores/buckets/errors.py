"""What S3 and GCS raise, put in one line: `CloudError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .clients import ATTEMPTS, SERVICES, gcs_endpoint, s3_endpoint


class CloudError(OSError):
    """A call to S3 or GCS that failed; its message is the cause, in one line."""


class Precondition(Exception):
    """A conditional write or delete found another version than expected."""


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
        return f"cannot reach S3 at {s3_endpoint()}: no answer after {ATTEMPTS} tries"
    if isinstance(error, boto.EndpointConnectionError | boto.ConnectionClosedError):
        return f"cannot reach S3 at {s3_endpoint()}: {_reason(error)} after {ATTEMPTS} tries"
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
        return f"cannot reach GCS at {gcs_endpoint()}: no answer"
    if isinstance(error, requests.ConnectionError):
        return f"cannot reach GCS at {gcs_endpoint()}: {_reason(error)}"
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


def describe_missing_bucket(scheme: str, name: str) -> str:
    return f"{SERVICES['gs' if scheme == 'gcs' else scheme]} bucket {name} does not exist"
