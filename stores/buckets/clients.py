"""The S3 and GCS clients: one per process and cloud, with bounded timeouts and retries."""

from __future__ import annotations

import os
from typing import Any

# Seconds to open a connection and to wait for each answer, and how many
# times a call is tried in all: an endpoint that refuses or never answers
# fails within a few connection timeouts.
CONNECT_SECONDS = 10.0
READ_SECONDS = 60.0
ATTEMPTS = 3
# How long a GCS call retries its transient failures, in all.
GCS_RETRY_SECONDS = 20.0

SERVICES = {"s3": "S3", "gs": "GCS"}

# One client per process and cloud: clients are not shared across a fork.
_clients: dict[tuple[int, str], Any] = {}


def made(scheme: str) -> Any:
    """This process's client for `s3` or `gs`, made when first asked for (what
    making it raises is the SDK's own error: see `errors.errors`)."""
    key = (os.getpid(), scheme)
    if key not in _clients:
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


def gcs_call() -> dict[str, Any]:
    """The timeout and retry of every GCS call."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return {
        "timeout": (CONNECT_SECONDS, READ_SECONDS),
        "retry": DEFAULT_RETRY.with_timeout(GCS_RETRY_SECONDS),
    }


def s3_endpoint() -> str:
    found = _clients.get((os.getpid(), "s3"))
    return str(found.meta.endpoint_url) if found is not None else "its endpoint"


def gcs_endpoint() -> str:
    return os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
