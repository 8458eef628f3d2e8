"""Profile stores: where profiles live between runs.

`base` defines what the pipeline and the launcher need from a store; each
store module implements it. `open_store` picks one from a `--store` URL,
parsed once (`core.locations`); each store kind declares what it can do
(`Capabilities`), which the launcher asks (`capabilities`) rather than
reading the URL.
"""

from __future__ import annotations

from profile_import.core.locations import POSTGRESQL, SQLITE, Location, LocationError, parse

from .base import (
    Capabilities,
    ImportTarget,
    ProfileStore,
    StoreError,
    StoreReader,
    VersionHistory,
    history_of,
)
from .snapshot import SnapshotStore

__all__ = [
    "Capabilities",
    "ImportTarget",
    "ProfileStore",
    "StoreError",
    "StoreReader",
    "VersionHistory",
    "capabilities",
    "history_of",
    "location_of",
    "open_store",
    "store_class",
]

DEFAULT_STORE = "profile-store"


def location_of(url: str | Location) -> Location:
    """A `--store` URL, parsed (`core.locations`). Raises `StoreError`."""
    if isinstance(url, Location):
        return url
    try:
        return parse(url, "store")
    except LocationError as e:
        raise StoreError(f"store {url}: {e}") from e


def store_class(location: Location) -> type[ProfileStore]:
    """The store kind at `location`. The database stores' modules (and their
    drivers) are imported only for a store of theirs: a run on the folder
    store never pays it."""
    if location.scheme == POSTGRESQL:
        from .postgres import PostgresStore

        return PostgresStore
    if location.scheme == SQLITE:
        from .sqlite import SqliteStore

        return SqliteStore
    return SnapshotStore


def capabilities(url: str | Location) -> Capabilities:
    """What the store at `url` can do, asked without opening it."""
    location = location_of(url)
    return store_class(location).capabilities_at(location)


def open_store(
    url: str | Location, *, buckets: int | None = None, work_root: str | None = None
) -> ProfileStore:
    """The store at `url`: a folder path (or `file://` URL), or an `s3://` or
    `gs://` (`gcs://`) bucket and prefix, is a snapshot store;
    `sqlite:///relative.db` or `sqlite:////absolute.db` a SQLite store;
    `postgresql://...?table=T&schema=S` a PostgreSQL store. `work_root`:
    where a PostgreSQL store's runs keep their work folders (a folder or a
    bucket URL; default: a temporary folder here)."""
    location = location_of(url)
    return store_class(location).at(location, buckets=buckets, work_root=work_root)
