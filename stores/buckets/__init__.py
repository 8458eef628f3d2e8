"""S3 and GCS buckets: the one place their clients are made and their errors
are put in one line.

Inputs, outputs and the stores in a bucket all reach object storage through
here (`open_bucket`, `open_object`):

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

The modules: `clients` (made from the environment, bounded), `errors`
(`CloudError`, one line), `bucket` (`Bucket`: one bucket's operations),
`streams` (`open_object`).
"""

from __future__ import annotations

from .bucket import (
    ABSENT,
    Bucket,
    GCSBucket,
    ObjectInfo,
    S3Bucket,
    Token,
    client,
    open_bucket,
    split_url,
)
from .clients import ATTEMPTS, CONNECT_SECONDS, GCS_RETRY_SECONDS, READ_SECONDS, SERVICES
from .errors import CloudError, Precondition, describe, describe_missing_bucket, errors
from .streams import TranslatedStream, open_object

__all__ = [
    "ABSENT",
    "ATTEMPTS",
    "CONNECT_SECONDS",
    "GCS_RETRY_SECONDS",
    "READ_SECONDS",
    "SERVICES",
    "Bucket",
    "CloudError",
    "GCSBucket",
    "ObjectInfo",
    "Precondition",
    "S3Bucket",
    "Token",
    "TranslatedStream",
    "client",
    "describe",
    "describe_missing_bucket",
    "errors",
    "open_bucket",
    "open_object",
    "split_url",
]
