"""The SQLite store: profiles in one table of an embedded database file.

`--store sqlite:///profiles.db` (a relative path) or `sqlite:////abs/profiles.db`.
The tables (`migrations/sqlite.py`):

    profiles         key (the identifier's key, sorted like `export`), record
                     (the export record), and columns computed from it
    executions       one row a published execution (its version, as `versions` lists)
    ledger           the input fingerprints each execution applied (idempotency)
    staging          a run's staged changes: new records, NULL for a delete
    staging_buckets  the buckets a run staged, checked at commit
    store_meta       bucket count and the current version (the publish's counter)

A run reads only the profiles its commands touch (`read_keys`, in batches)
and stages only what changed (`write_changes`). Its commit merges the staging
rows into `profiles`, records the execution and its ledger rows, and moves the
current version, in ONE transaction that first checks the version is still
the run's parent (compare-and-swap): readers see the old or the new state,
never a mix, and a run that fails or is killed leaves `profiles` unchanged.
Staging left by a dead run is removed by the next run.

One writer at a time: a run holds an exclusive lock on `<file>.lock` (`flock`,
released by the kernel if the run dies); the database runs in WAL mode, so
readers are never blocked, and workers staging concurrently wait their turn
(`busy_timeout`). The store keeps only the current state: `versions` lists the
executions that made it; there is nothing to roll back to or prune.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from typing import Any

from profile_import.core import clock, records
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import Identifier, bucket_of

from . import locking
from .base import (
    BucketSink,
    BucketSource,
    Staging,
    StoreError,
    Verification,
    Version,
)
from .failpoints import AFTER_POINTER, BEFORE_POINTER, DATA_WRITTEN, STAGED, failpoint
from .migrations import latest, pending
from .migrations.sqlite import MIGRATIONS
from .sql import DEFAULT_BUCKETS, CurrentStateStore

SCHEME = "sqlite://"
_BATCH = 500  # keys a look-up query (well under SQLite's 32,766 parameters)
_BUSY_MS = 600_000  # workers staging at once wait for each other, not fail
_MAX_PROBLEMS = 20


def path_of(url: str) -> str:
    """The file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URL."""
    rest = url[len(SCHEME) :]
    if not rest.startswith("/") or len(rest) < 2:
        raise StoreError(f"store {url}: write sqlite:///relative.db or sqlite:////absolute.db")
    return rest[1:]


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit: every transaction here is explicit (BEGIN ... COMMIT).
    conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


def _chunks(keys: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(keys), _BATCH):
        yield keys[i : i + _BATCH]


def _lookup(conn: sqlite3.Connection, keys: Sequence[bytes]) -> Iterator[tuple[bytes, str]]:
    """(key, record) of those of `keys` the profiles table holds, batch by batch."""
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(
            f"SELECT key, record FROM profiles WHERE key IN ({marks}) ORDER BY key", chunk
        )


class _Connected:
    """Opens its connection on the worker (`open`), never pickles it."""

    path: str
    _conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if self._conn is None:
            self._conn = _connect(self.path)

    @property
    def conn(self) -> sqlite3.Connection:
        self.open()
        assert self._conn is not None
        return self._conn

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_conn"}


class SqliteBucketSource(_Connected, BucketSource):
    """Reads the current profiles: only the touched keys during a run."""

    touched_only = True

    def __init__(self, path: str, buckets: int, exists: bool) -> None:
        self.path = path
        self.buckets = buckets
        self.exists = exists  # False: no version yet (a dry run must not create the file)

    def open(self) -> None:
        if self.exists:
            super().open()

    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        if not self.exists:
            return
        for key, record in _lookup(self.conn, keys):
            yield key + records.SEPARATOR + record.encode() + b"\n"

    def read_bucket(self, bucket: int) -> Iterator[bytes]:
        # Not a run's path (runs read `read_keys`): a whole-table scan.
        if not self.exists:
            return
        for key, record in self.conn.execute("SELECT key, record FROM profiles ORDER BY key"):
            if bucket_of(key, self.buckets) == bucket:
                yield key + records.SEPARATOR + record.encode() + b"\n"


class SqliteBucketSink(_Connected, BucketSink):
    """Stages a bucket's changes in the execution's staging rows."""

    def __init__(self, path: str, execution_id: str) -> None:
        self.path = path
        self.execution_id = execution_id

    def write_bucket(self, bucket: int, lines: Iterable[bytes]) -> int:
        raise NotImplementedError("the sqlite store stages changes (write_changes)")

    def write_changes(self, bucket: int, lines: Sequence[bytes], deleted: Sequence[bytes]) -> None:
        rows: list[tuple[str, int, bytes, str | None]] = []
        for line in lines:
            key, record = records.split(line)
            rows.append((self.execution_id, bucket, key, record.decode()))
        rows += [(self.execution_id, bucket, key, None) for key in deleted]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # A retried bundle replaces what the bucket staged before.
            conn.execute(
                "DELETE FROM staging WHERE execution_id = ? AND bucket = ?",
                (self.execution_id, bucket),
            )
            conn.executemany("INSERT INTO staging VALUES (?, ?, ?, ?)", rows)
            conn.execute(
                "INSERT OR IGNORE INTO staging_buckets VALUES (?, ?)", (self.execution_id, bucket)
            )
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        failpoint(STAGED)


def _version(row: Sequence[Any]) -> Version:
    number, parent, created_at, profiles, execution = row
    return Version(number, parent, created_at, profiles, json.loads(execution))


_VERSION_COLUMNS = "version, parent, created_at, profiles, execution"


class SqliteStore(CurrentStateStore):
    kind = "SQLite"
    migrations = MIGRATIONS

    def __init__(self, url: str, *, buckets: int | None = None) -> None:
        self.url = url
        self.path = os.path.abspath(path_of(url))
        if buckets is not None and not 1 <= buckets <= 65536:
            raise StoreError(f"a store has 1 to 65536 buckets, not {buckets}")
        self._requested_buckets = buckets
        self._conn: sqlite3.Connection | None = None
        self.buckets = buckets or DEFAULT_BUCKETS
        if self._schema_version() > 0 and self.exists():
            self._load_buckets()

    def __getstate__(self) -> dict[str, Any]:
        # The pipeline carries the store to its final step: a worker opens its own connection.
        return {**self.__dict__, "_conn": None}

    # --- the database -------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            if not os.path.isdir(os.path.dirname(self.path)):
                raise StoreError(f"store {self.url}: no folder {os.path.dirname(self.path)}")
            try:
                self._conn = _connect(self.path)
            except sqlite3.Error as e:
                raise StoreError(f"store {self.url}: cannot open {self.path}: {e}") from e
        return self._conn

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.url}: {e}") from e

    def _schema_version(self) -> int:
        """0 for no database (or an empty one); refuses a newer or foreign one."""
        if not os.path.exists(self.path):
            return 0
        try:
            tables = {r[0] for r in self._sql("SELECT name FROM sqlite_master WHERE type='table'")}
        except StoreError as e:
            raise StoreError(f"store {self.url}: {self.path} is not a SQLite database") from e
        if "schema_version" not in tables:
            if tables:
                raise StoreError(
                    f"store {self.url}: {self.path} is a database that is not a profile store "
                    "(no schema_version table)"
                )
            return 0
        found = self._sql("SELECT max(version) FROM schema_version")[0][0] or 0
        if found > latest(MIGRATIONS):
            raise StoreError(
                f"store {self.url} has schema version {found}; this profile-import knows "
                f"versions up to {latest(MIGRATIONS)}: upgrade profile-import"
            )
        return int(found)

    def _migrate(self) -> None:
        """Brings the schema to the latest version (a run, under the lock)."""
        conn = self.conn
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        for migration in pending(MIGRATIONS, self._schema_version()):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (migration.version, migration.description, clock.iso(clock.now())),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _meta(self, name: str) -> str | None:
        rows = self._sql("SELECT value FROM store_meta WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    # --- the run ------------------------------------------------------------

    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        if not os.path.isdir(os.path.dirname(self.path)):
            raise StoreError(f"store {self.url}: no folder {os.path.dirname(self.path)}")
        return locking.exclusive(f"{self.path}.lock", timeout, f"store {self.url}")

    def current(self) -> Version | None:
        if not self.exists():
            return None
        return self.version(self._current_number())

    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        if version is None or not fingerprints:
            return {}
        found: dict[str, AppliedInput] = {}
        wanted = sorted(set(fingerprints))
        for i in range(0, len(wanted), _BATCH):
            chunk = wanted[i : i + _BATCH]
            rows = self._sql(
                "SELECT fingerprint, execution_id, version, finished_at FROM ledger "
                f"WHERE version <= ? AND fingerprint IN ({','.join('?' * len(chunk))}) "
                "ORDER BY version",
                (version.number, *chunk),
            )
            for fingerprint, execution_id, number, finished_at in rows:
                # The latest execution that applied it, as the folder store's ledger.
                found[fingerprint] = AppliedInput(fingerprint, execution_id, number, finished_at)
        return found

    def source(self, version: Version | None) -> SqliteBucketSource:
        return SqliteBucketSource(self.path, self.buckets, version is not None)

    def _work_root(self) -> str:
        return f"{self.path}.work"

    def begin(self, execution_id: str, parent: Version | None) -> Staging:
        self._migrate()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._current_number() == 0:
                # A new store (or one whose first run never published): its settings.
                conn.execute(
                    "INSERT OR REPLACE INTO store_meta VALUES ('buckets', ?)", (str(self.buckets),)
                )
            else:
                self._load_buckets()
            # What dead runs staged: they never published it.
            conn.execute("DELETE FROM staging")
            conn.execute("DELETE FROM staging_buckets")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        shutil.rmtree(self._work_root(), ignore_errors=True)
        work_dir = os.path.join(self._work_root(), execution_id)
        os.makedirs(work_dir)
        return Staging(
            execution_id=execution_id,
            parent=parent,
            source=self.source(parent),
            sink=SqliteBucketSink(self.path, execution_id),
            work_dir=work_dir,
        )

    def commit(
        self,
        staging: Staging,
        execution: dict[str, Any],
        profiles_delta: int,
        buckets_written: int,
        fingerprints: Sequence[str],
    ) -> Version:
        failpoint(DATA_WRITTEN)
        execution_id = staging.execution_id
        parent = staging.parent
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = self._sql(
                f"SELECT {_VERSION_COLUMNS} FROM executions WHERE execution_id = ?",
                (execution_id,),
            )
            if done:  # a retry of this step, after its publish
                conn.execute("ROLLBACK")
                return _version(done[0])
            current = self._current_number()
            if current != (parent.number if parent else 0):
                raise StoreError(
                    f"store {self.url} changed during the run (another writer without the "
                    "lock?); nothing was published"
                )
            staged = self._sql(
                "SELECT count(*) FROM staging_buckets WHERE execution_id = ?", (execution_id,)
            )[0][0]
            if staged != buckets_written:
                raise StoreError(
                    f"store {self.url}: the run wrote {buckets_written} buckets but {staged} are "
                    "staged; nothing was published"
                )
            conn.execute(
                "INSERT INTO profiles (key, record) SELECT key, record FROM staging "
                "WHERE execution_id = ? AND record IS NOT NULL "
                "ON CONFLICT (key) DO UPDATE SET record = excluded.record",
                (execution_id,),
            )
            conn.execute(
                "DELETE FROM profiles WHERE key IN "
                "(SELECT key FROM staging WHERE execution_id = ? AND record IS NULL)",
                (execution_id,),
            )
            number = current + 1
            now = clock.iso(clock.now())
            profiles = (parent.profiles if parent else 0) + profiles_delta
            conn.execute(
                "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?)",
                (number, parent.number if parent else None, execution_id, now, profiles,
                 json.dumps(execution)),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO ledger VALUES (?, ?, ?, ?)",
                [(fp, number, execution_id, now) for fp in dict.fromkeys(fingerprints)],
            )
            conn.execute(
                "INSERT OR REPLACE INTO store_meta VALUES ('current_version', ?)", (str(number),)
            )
            conn.execute("DELETE FROM staging WHERE execution_id = ?", (execution_id,))
            conn.execute("DELETE FROM staging_buckets WHERE execution_id = ?", (execution_id,))
            failpoint(BEFORE_POINTER)
            conn.execute("COMMIT")
        except BaseException as e:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"store {self.url}: {e}; nothing was published") from e
            raise
        failpoint(AFTER_POINTER)
        shutil.rmtree(staging.work_dir, ignore_errors=True)
        return Version(number, parent.number if parent else None, now, profiles, execution)

    def abort(self, staging: Staging) -> None:
        shutil.rmtree(staging.work_dir, ignore_errors=True)
        if self._schema_version() == 0:
            return
        conn = self.conn
        with suppress(sqlite3.Error):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM staging WHERE execution_id = ?", (staging.execution_id,))
            conn.execute(
                "DELETE FROM staging_buckets WHERE execution_id = ?", (staging.execution_id,)
            )
            conn.execute("COMMIT")

    # --- versions -----------------------------------------------------------

    def versions(self) -> list[Version]:
        if not self.exists():
            return []
        rows = self._sql(f"SELECT {_VERSION_COLUMNS} FROM executions ORDER BY version")
        return [_version(row) for row in rows]

    def version(self, number: int) -> Version | None:
        # Only the current state is kept: an older version cannot be read.
        if not self._readable() or number != self._current_number():
            return None
        rows = self._sql(f"SELECT {_VERSION_COLUMNS} FROM executions WHERE version = ?", (number,))
        return _version(rows[0]) if rows else None

    # --- reading ------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any], version: Version | None) -> Iterator[Any]:
        """Rows of one read transaction: a consistent snapshot (WAL), checked to
        be `version` (None: whatever is current)."""
        conn = _connect(self.path)
        try:
            conn.execute("BEGIN")
            current = conn.execute(
                "SELECT value FROM store_meta WHERE name = 'current_version'"
            ).fetchone()
            if version is not None and (current is None or int(current[0]) != version.number):
                raise StoreError(
                    f"store {self.url}: version {version.number} is no longer the current "
                    "state, and a SQLite store keeps no other"
                )
            yield from conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.url}: {e}") from e
        finally:
            conn.close()

    def export(self) -> Iterator[bytes]:
        if not self.exists():
            return
        for (record,) in self._rows("SELECT record FROM profiles ORDER BY key", (), None):
            yield record.encode()

    def get(self, identifier: Identifier) -> bytes | None:
        rows = self._sql("SELECT record FROM profiles WHERE key = ?", (identifier.key,))
        return rows[0][0].encode() if rows else None

    def scan(
        self,
        version: Version,
        after: bytes | None = None,
        keep: Callable[[bytes], bool] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        sql = "SELECT key, record FROM profiles WHERE key > ? ORDER BY key"
        for key, text in self._rows(sql, (after or b"",), version):
            record = text.encode()
            if keep is None or keep(record):
                yield key, record

    def get_many(self, version: Version, keys: Collection[bytes]) -> dict[bytes, bytes]:
        if version.number != self._current_number():
            raise StoreError(
                f"store {self.url}: version {version.number} is no longer the current state"
            )
        return {key: record.encode() for key, record in _lookup(self.conn, sorted(set(keys)))}

    def verify(self, number: int | None = None) -> Verification:
        current = self.current()
        if current is None:
            raise StoreError(f"store {self.url} has no published version")
        if number is not None and number != current.number:
            raise StoreError(
                f"store {self.url}: a SQLite store keeps only its current version "
                f"({current.number}), not {number}"
            )
        problems = [f"{self.path}: {r[0]}" for r in self._sql("PRAGMA quick_check") if r[0] != "ok"]
        lines = 0
        for key, text in self._rows("SELECT key, record FROM profiles ORDER BY key", (), current):
            lines += 1
            line = bytes(key) + records.SEPARATOR + str(text).encode() + b"\n"
            problem = records.problem(line)
            if problem is not None and len(problems) < _MAX_PROBLEMS:
                problems.append(f"profile {bytes(key)[:80]!r} {problem}")
        if lines != current.profiles:
            problems.append(
                f"version {current.number} records {current.profiles:,} profiles, "
                f"the profiles table holds {lines:,}"
            )
        return Verification(current.number, 1, lines, tuple(problems))
