"""A store's folder, on this machine or in a bucket, by its location."""

from __future__ import annotations

from profile_import.core.locations import parse

from .files import Files, LocalFiles


def open_files(url: str) -> Files:
    """The files of a store at a folder path or an `s3://` / `gs://` URL
    (canonical: `core.locations.Location.url`)."""
    if parse(url).is_object:
        # Imported when used: a folder on this machine never needs the clouds' clients.
        from .objects import ObjectFiles

        return ObjectFiles(url)
    return LocalFiles(url, url)


def remove_folder(location: str) -> None:
    """Removes a folder, or every object under a bucket URL's prefix (a run's
    work folder); nothing if it is not there."""
    parent, _, name = location.rstrip("/").rpartition("/")
    open_files(parent).remove_tree(name)
