"""What the database stores share: a store that keeps only its current state.

SQLite (`sqlite.py`) and PostgreSQL (`postgres.py`) differ in their SQL and
connections; how they read their schema version, their metadata and their
bucket count, and that they cannot roll back or prune, is the same.
"""

from __future__ import annotations

import abc

from .base import ProfileStore, StoreError, Version
from .migrations import Migration, latest

DEFAULT_BUCKETS = 64


class CurrentStateStore(ProfileStore):
    """A store whose database holds the current state and the ledger only."""

    kind: str  # "SQLite", "PostgreSQL": for messages
    migrations: tuple[Migration, ...]
    _requested_buckets: int | None

    @abc.abstractmethod
    def _schema_version(self) -> int:
        """The schema version the database holds (0: none yet)."""

    @abc.abstractmethod
    def _meta(self, name: str) -> str | None:
        """A value of the store's metadata table."""

    def _readable(self) -> bool:
        """Whether the schema is there to read (an older one must be migrated by a run)."""
        found = self._schema_version()
        newest = latest(self.migrations)
        if 0 < found < newest:
            raise StoreError(
                f"store {self.url} has schema version {found}; a run migrates it to {newest}"
            )
        return found == newest

    def _current_number(self) -> int:
        return int(self._meta("current_version") or 0)

    def _load_buckets(self) -> None:
        stored = int(self._meta("buckets") or DEFAULT_BUCKETS)
        requested = self._requested_buckets
        if requested is not None and requested != stored:
            raise StoreError(
                f"store {self.url} has {stored} buckets; --buckets {requested} "
                "only applies when a store is created"
            )
        self.buckets = stored

    def exists(self) -> bool:
        return self._readable() and self._current_number() > 0

    def rollback(self, number: int) -> Version:
        raise StoreError(
            f"store {self.url}: a {self.kind} store keeps only its current state; "
            "there is no version to roll back to"
        )

    def prune(self, keep: int) -> list[int]:
        if keep < 1:
            raise StoreError("prune keeps at least one version")
        return []  # nothing but the current state is kept
