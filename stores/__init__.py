"""Profile stores: where profiles live between runs.

`base` defines what the pipeline and the launcher need from a store; each
store module implements it. `open_store` picks one from a `--store` URL.
"""

from __future__ import annotations

from .base import ProfileStore, StoreError
from .snapshot import SnapshotStore

__all__ = ["ProfileStore", "StoreError", "open_store"]

DEFAULT_STORE = "profile-store"


def open_store(url: str, *, buckets: int | None = None) -> ProfileStore:
    """The store at `url`: a folder path (or `file://` URL), or an `s3://` or
    `gs://` bucket and prefix, is a snapshot store."""
    if url.startswith("file://"):
        url = url[len("file://") :]
    if url.startswith(("s3://", "gs://")):
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        if not bucket:
            raise StoreError(f"store {url}: no bucket name (s3://BUCKET/PREFIX)")
        return SnapshotStore(url, buckets=buckets)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"store {url}: the {scheme}:// scheme is not supported yet")
    return SnapshotStore(url, buckets=buckets)
