"""What the database stores share: a store that keeps only its current state.

SQLite (`sqlite.py`) and PostgreSQL (`postgres.py`) differ in their SQL,
connections and transactions; the shape of everything else is one, here: how
they read their schema version, metadata and bucket count, that they cannot
roll back, how a commit checks and publishes (`commit`, with the dialect's
`_publish_staged`), and how `export`, `scan`, `get`, `get_many` and `verify`
read (over the dialect's `_records` and `_lookup`).

Change records (SPEC §6) are rows of a changes table keyed by version,
published with the profiles in the commit's transaction (`_record_changes`)
and read back from one consistent snapshot (`changed_since`). `prune --keep N`
drops the versions older than the newest N: it deletes their change records,
raises the store's `changes_since_min`, the oldest `--since` it answers (also
the version a store had when it began to keep change records), and raises
`pruned_upto`, below which `versions` lists none (their executions rows stay:
the ledger's rows name them).

The statements both databases run alike are written once here, as templates
that each dialect's `_run` renders.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

from profile_import.core import clock, records
from profile_import.core.changes import ChangeRecord
from profile_import.core.identifiers import Identifier

from .base import ChangedSince, ProfileStore, Staging, StoreError, Verification, Version
from .failpoints import AFTER_POINTER, BEFORE_POINTER, DATA_WRITTEN, failpoint
from .folders import remove_folder
from .migrations import Migration, latest

DEFAULT_BUCKETS = 64
MAX_PROBLEMS = 20  # problems `verify` lists, at most


def check_bucket_count(buckets: int | None) -> None:
    if buckets is not None and not 1 <= buckets <= 65536:
        raise StoreError(f"a store has 1 to 65536 buckets, not {buckets}")


def remove_work(work_dir: str) -> None:
    # A work folder that cannot be removed (a bucket out of reach) must not
    # fail the run that published: it holds only that run's reject files.
    with suppress(Exception):
        remove_folder(work_dir)


class Connected(abc.ABC):
    """A source or sink: opens its connection on the worker (`open`), never pickles it."""

    _conn: Any = None

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new connection to the database."""

    def open(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    @property
    def conn(self) -> Any:
        self.open()
        return self._conn

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_conn"}


class CurrentStateStore(ProfileStore):
    """A store whose database holds the current state and the ledger only."""

    kind: str  # "SQLite", "PostgreSQL": for messages
    migrations: tuple[Migration, ...]
    _requested_buckets: int | None
    _conn: Any

    def __getstate__(self) -> dict[str, Any]:
        # The pipeline carries the store to its final step: a worker opens its own connection.
        return {**self.__dict__, "_conn": None}

    # --- what each database does its own way --------------------------------

    @property
    @abc.abstractmethod
    def conn(self) -> Any:
        """The store's own connection (autocommit: transactions are explicit)."""

    @abc.abstractmethod
    def _run(self, conn: Any, template: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of a statement written for both databases, run on `conn`:
        `{meta}`, `{changes}` name the store's tables, `{p}` marks a parameter."""

    @abc.abstractmethod
    def _read_snapshot(self) -> AbstractContextManager[Any]:
        """A connection of its own, in one consistent read transaction; closed at
        the end, the driver's errors raised as a StoreError."""

    @abc.abstractmethod
    def _lookup_in(self, conn: Any, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(key, export record) of those of `keys` (sorted) the profiles hold, read on `conn`."""

    @abc.abstractmethod
    def _schema_version(self) -> int:
        """The schema version the database holds (0: none yet)."""

    @abc.abstractmethod
    def _meta(self, name: str) -> str | None:
        """A value of the store's metadata table."""

    @abc.abstractmethod
    def _executions(self, column: str | None = None, value: Any = None) -> list[Version]:
        """The executions table's rows (those whose `column` is `value`), oldest first."""

    @abc.abstractmethod
    def _write_transaction(self) -> AbstractContextManager[None]:
        """One write transaction, the publish's: committed at the end, rolled back on error."""

    @abc.abstractmethod
    def _database_errors(self) -> tuple[type[Exception], ...]:
        """The driver's exception classes."""

    def _current_for_update(self) -> int:
        """The current version number, held until the write transaction ends."""
        return self._current_number()

    @abc.abstractmethod
    def _staged_buckets(self, execution_id: str) -> int:
        """How many buckets the execution staged."""

    @abc.abstractmethod
    def _publish_staged(self, version: Version, execution_id: str, fingerprints: list[str]) -> None:
        """Inside the publish's transaction: merges the execution's staged rows
        into the profiles, adds its execution and ledger rows, moves
        `current_version` to `version` and drops its staging."""

    @abc.abstractmethod
    def _records(
        self, after: bytes | None, version: Version | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, export record) of the profiles with a key > `after`, in key
        order, from one consistent read, checked to be `version` (None: the
        current one)."""

    @abc.abstractmethod
    def _lookup(self, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(key, export record) of those of `keys` (sorted) the profiles hold."""

    @abc.abstractmethod
    def _migrate(self) -> None:
        """Brings the schema to the latest version (under the lock)."""

    def _integrity_problems(self) -> list[str]:
        """What the database's own check finds (`verify`)."""
        return []

    # --- the shared shape ---------------------------------------------------

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

    def _set_meta(self, name: str, value: int) -> None:
        self._run(
            self.conn,
            "INSERT INTO {meta} VALUES ({p}, {p}) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, str(value)),
        )

    def _record_changes(self, number: int, staged: str, params: Sequence[Any] = ()) -> None:
        """Inside the publish's transaction: version `number`'s change records,
        one a row of `staged` (a table, or a table and its WHERE clause)."""
        self._run(
            self.conn,
            f"INSERT INTO {{changes}} SELECT {{p}}, key, before FROM {staged}",
            (number, *params),
        )

    def _load_buckets(self) -> None:
        stored = int(self._meta("buckets") or DEFAULT_BUCKETS)
        requested = self._requested_buckets
        if requested is not None and requested != stored:
            raise StoreError(
                f"store {self.url} has {stored} buckets; --buckets {requested} "
                "only applies when a store is created"
            )
        self.buckets = stored

    def _no_longer_current(self, version: Version) -> StoreError:
        return StoreError(
            f"store {self.url}: version {version.number} is no longer the current state, "
            f"and a {self.kind} store keeps no other"
        )

    def exists(self) -> bool:
        return self._readable() and self._current_number() > 0

    def current(self) -> Version | None:
        if not self.exists():
            return None
        return self.version(self._current_number())

    def commit(
        self,
        staging: Staging,
        execution: dict[str, Any],
        profiles_delta: int,
        buckets_written: int,
        fingerprints: Collection[str],
    ) -> Version:
        failpoint(DATA_WRITTEN)
        execution_id, parent = staging.execution_id, staging.parent
        try:
            with self._write_transaction():
                done = self._executions("execution_id", execution_id)
                if done:  # a retry of this step, after its publish
                    return done[0]
                number = self._current_for_update()
                if number != (parent.number if parent else 0):
                    raise StoreError(
                        f"store {self.url} changed during the run (another writer without the "
                        "lock?); nothing was published"
                    )
                staged = self._staged_buckets(execution_id)
                if staged != buckets_written:
                    raise StoreError(
                        f"store {self.url}: the run wrote {buckets_written} buckets but {staged} "
                        "are staged; nothing was published"
                    )
                version = Version(
                    number + 1,
                    parent.number if parent else None,
                    clock.iso(clock.now()),
                    (parent.profiles if parent else 0) + profiles_delta,
                    execution,
                )
                self._publish_staged(version, execution_id, list(dict.fromkeys(fingerprints)))
                failpoint(BEFORE_POINTER)
        except self._database_errors() as e:
            raise StoreError(f"store {self.url}: {e}; nothing was published") from e
        failpoint(AFTER_POINTER)
        remove_work(staging.work_dir)
        return version

    def prune(self, keep: int) -> list[int]:
        """Drops all but the newest `keep` versions: their change records (only
        the current state of the profiles is kept anyway) and their rows in
        `versions`; returns the versions dropped, as a store that keeps
        versions does."""
        if keep < 1:
            raise StoreError("prune keeps at least one version")
        if self._schema_version() == 0:
            return []
        self._migrate()
        listed_after = int(self._meta("pruned_upto") or 0)
        upto = self._current_number() - keep
        if upto <= listed_after:
            return []
        dropped = [v.number for v in self._executions() if listed_after < v.number <= upto]
        oldest = max(upto, int(self._meta("changes_since_min") or 0))
        try:
            with self._write_transaction():
                self._run(self.conn, "DELETE FROM {changes} WHERE version <= {p}", (upto,))
                self._set_meta("changes_since_min", oldest)
                self._set_meta("pruned_upto", upto)
        except self._database_errors() as e:
            raise StoreError(f"store {self.url}: {e}; nothing was pruned") from e
        return dropped

    def changed_since(self, since: int) -> ChangedSince:
        """From one consistent read: checks `since` (`check_since`), then reads
        the change records after it and the current records of their profiles."""
        with self._read_snapshot() as conn:
            meta = dict(self._run(conn, "SELECT name, value FROM {meta}"))
            current = int(meta.get("current_version") or 0)
            self.check_since(since, current, int(meta.get("changes_since_min") or 0))
            found = [
                ChangeRecord(version, bytes(key), before)
                for version, key, before in self._run(
                    conn,
                    "SELECT version, key, before FROM {changes} WHERE version > {p} "
                    "ORDER BY version, key",
                    (since,),
                )
            ]
            now = dict(self._lookup_in(conn, sorted({r.key for r in found})))
        return ChangedSince(current, found, now)

    def check_since(self, since: int, current: int, oldest: int) -> None:
        """Refuses a `--since` the store cannot answer (SPEC §6)."""
        if since > current:
            raise StoreError(
                f"store {self.url}: version {since} is not published yet (the store is at "
                f"version {current})"
            )
        if since < oldest:
            raise StoreError(
                f"store {self.url}: no changes since version {since}: the change records of "
                f"the versions up to {oldest} are no longer kept (pruned, or published before "
                f"change records were kept); the oldest --since this store answers is {oldest}"
            )

    def versions(self) -> list[Version]:
        if not self.exists():
            return []
        listed_after = int(self._meta("pruned_upto") or 0)
        return [v for v in self._executions() if v.number > listed_after]

    def version(self, number: int) -> Version | None:
        if not self._readable() or number != self._current_number():
            return None  # only the current state is kept
        found = self._executions("version", number)
        return found[0] if found else None

    def export(self) -> Iterator[bytes]:
        if not self.exists():
            return
        for _, record in self._records(None, None):
            yield record

    def get(self, identifier: Identifier) -> bytes | None:
        return dict(self._lookup([identifier.key])).get(identifier.key)

    def scan(
        self,
        version: Version,
        after: bytes | None = None,
        keep: Callable[[bytes], bool] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        for key, record in self._records(after, version):
            if keep is None or keep(record):
                yield key, record

    def get_many(self, version: Version, keys: Collection[bytes]) -> dict[bytes, bytes]:
        if version.number != self._current_number():
            raise self._no_longer_current(version)
        return dict(self._lookup(sorted(set(keys))))

    def verify(self, number: int | None = None) -> Verification:
        current = self.current()
        if current is None:
            raise StoreError(f"store {self.url} has no published version")
        if number is not None and number != current.number:
            raise StoreError(
                f"store {self.url}: a {self.kind} store keeps only its current version "
                f"({current.number}), not {number}"
            )
        problems = self._integrity_problems()
        lines = 0
        for key, record in self._records(None, current):
            lines += 1
            problem = records.problem(key + records.SEPARATOR + record + b"\n")
            if problem is not None and len(problems) < MAX_PROBLEMS:
                problems.append(f"profile {key[:80]!r} {problem}")
        if lines != current.profiles:
            problems.append(
                f"version {current.number} records {current.profiles:,} profiles, "
                f"the profiles table holds {lines:,}"
            )
        return Verification(current.number, 1, lines, tuple(problems))
