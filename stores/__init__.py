"""Profile stores: where profiles live between runs.

`base` defines what the pipeline and the launcher need from a store; each
store module implements it. `open_store` picks one from a `--store` URL.
"""

from __future__ import annotations

from .base import ProfileStore, StoreError
from .snapshot import SnapshotStore

__all__ = ["ProfileStore", "StoreError", "open_store", "reachable_from_anywhere"]

# The database stores' URL schemes. Their modules (and their drivers) are
# imported only for a store of theirs: a run on the folder store never pays it.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"

DEFAULT_STORE = "profile-store"


def open_store(
    url: str, *, buckets: int | None = None, work_root: str | None = None
) -> ProfileStore:
    """The store at `url`: a folder path (or `file://` URL), or an `s3://` or
    `gs://` bucket and prefix, is a snapshot store; `sqlite:///relative.db` or
    `sqlite:////absolute.db` a SQLite store; `postgresql://...?table=T&schema=S`
    a PostgreSQL store. `work_root`: where a PostgreSQL store's runs keep their
    work folders (a folder or a bucket URL; default: a temporary folder here)."""
    if url.startswith(POSTGRES_SCHEMES):
        from . import postgres

        return postgres.PostgresStore(url, buckets=buckets, work_root=work_root)
    if url.startswith(SQLITE_SCHEME):
        from . import sqlite

        return sqlite.SqliteStore(url, buckets=buckets)
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


def reachable_from_anywhere(url: str) -> bool:
    """Whether workers on other machines can reach the store at `url`: a database
    server or a bucket can; a folder or a SQLite file lives on this machine."""
    return url.split("://", 1)[0] in ("postgresql", "postgres", "s3", "gs")
