"""`profile-import list` and `profile-import get --ids`: reading many profiles.

Both print export records (NDJSON) on standard output and one JSON line of
page or batch information on standard error, so stdout stays pure data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from profile_import.core.cursors import Cursor, CursorError
from profile_import.core.filters import FilterError, Query, parse_properties, project_record
from profile_import.core.ids import AskedIds
from profile_import.stores.base import StoreError, StoreReader

DEFAULT_LIMIT = 300


class ReadUsageError(Exception):
    """Bad arguments for a read command: exit status 2."""


@dataclass
class PageInfo:
    """What `list` reports once its page is written."""

    version: int | None
    count: int = 0
    has_next: bool = False
    next_cursor: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "has_next": self.has_next,
            "next_cursor": self.next_cursor,
            "version": self.version,
        }


def _properties(text: str | None) -> tuple[tuple[str, ...], ...] | None:
    if text is None:
        return None
    try:
        return parse_properties(text)
    except FilterError as e:
        raise ReadUsageError(str(e)) from e


@dataclass
class Page:
    """One page of `list`: iterate it for the records, then read `info`."""

    store: StoreReader
    where: list[str]
    properties: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    info: PageInfo = field(default_factory=lambda: PageInfo(None))

    def __post_init__(self) -> None:
        # Everything that can be refused is checked before a byte is written.
        try:
            self._query = Query.parse(self.where)
        except FilterError as e:
            raise ReadUsageError(str(e)) from e
        self._paths = _properties(self.properties)
        self._after: bytes | None = None
        if self.cursor is None:
            self._version = self.store.current()
            self.info = PageInfo(self._version.number if self._version else None)
            return
        try:
            cursor = Cursor.decode(self.cursor)
        except CursorError as e:
            raise ReadUsageError(str(e)) from e
        if cursor.query != self._query.digest():
            raise ReadUsageError("--cursor was made for other --where filters; give the same ones")
        self._version = self.store.version(cursor.version)
        if self._version is None:
            raise StoreError(
                f"the cursor's store version {cursor.version} is no longer kept (pruned); "
                "start the listing again without --cursor"
            )
        self._after = cursor.after
        self.info = PageInfo(cursor.version)

    def __iter__(self) -> Iterator[bytes]:
        if self._version is None:  # an empty store
            return
        scan = self.store.scan(self._version, self._after, self._query.predicate())
        last: bytes | None = None
        info = self.info
        try:
            for key, record in scan:
                if info.count == self.limit:
                    # One match past the page: has_next is exact, the last page says so.
                    info.has_next = True
                    break
                yield project_record(record, self._paths)
                info.count += 1
                last = key
        finally:
            close = getattr(scan, "close", None)
            if close is not None:
                close()
        if info.has_next and last is not None:
            info.next_cursor = Cursor(self._version.number, last, self._query.digest()).encode()


@dataclass
class Batch:
    """`get --ids`: the records found, in the order asked; `info` once iterated."""

    store: StoreReader
    ids: AskedIds
    properties: str | None = None
    info: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._paths = _properties(self.properties)

    def __iter__(self) -> Iterator[bytes]:
        version = self.store.current()
        found = self.store.get_many(version, self.ids.keys) if version is not None else {}
        self.info = {
            "version": version.number if version is not None else None,
            "asked": self.ids.asked,
            "found": len(found),
            "missing": len(self.ids.keys) - len(found),
            "duplicates": self.ids.duplicates,
        }
        for key in self.ids.keys:
            record = found.get(key)
            if record is not None:
                yield project_record(record, self._paths)
