"""The SQLite store: profiles in one table of an embedded database file.

`--store sqlite:///profiles.db` (a relative path) or `sqlite:////abs/profiles.db`.
The tables (`migrations/sqlite.py`):

    profiles         key (the identifier's key, sorted like `export`), record
                     (the export record), and columns computed from it
    executions       one row a published execution (its version, as `versions` lists)
    ledger           the input fingerprints each execution applied (idempotency)
    staging          a run's staged changes: new records, NULL for a delete
    staging_buckets  the buckets a run staged, checked at commit
    changes          the change records of each version (SPEC §6): key, and
                     the digest of the profile's state before
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
executions that made it; there is nothing to roll back to. Each version's
change records (`changes`, SPEC §6) are kept until `prune` drops them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

from profile_import.core import clock, records
from profile_import.core.idempotency import AppliedInput
from profile_import.core.locations import Location, LocationError, parse

from . import locking
from .base import (
    BucketSink,
    BucketSource,
    Capabilities,
    Staging,
    StoreError,
    Version,
)
from .failpoints import STAGED, failpoint
from .migrations import latest, pending
from .migrations.sqlite import MIGRATIONS
from .sql import (
    DEFAULT_BUCKETS,
    Connected,
    CurrentStateStore,
    check_bucket_count,
    remove_work,
)

_BATCH = 500  # keys a look-up query (well under SQLite's 32,766 parameters)
# The names in the statements `sql.py` writes for both databases.
_TEMPLATE_NAMES = {"meta": "store_meta", "changes": "changes", "p": "?"}
_BUSY_MS = 600_000  # workers staging at once wait for each other, not fail


def path_of(url: str) -> str:
    """The file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URL."""
    try:
        location = parse(url, "store")
    except LocationError as e:
        raise StoreError(f"store {url}: {e}") from e
    if location.scheme != "sqlite":
        raise StoreError(f"store {url}: write sqlite:///relative.db or sqlite:////absolute.db")
    return location.path


def _connect(path: str) -> sqlite3.Connection:
    # Autocommit: every transaction here is explicit (BEGIN ... COMMIT).
    conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
    return conn


def _chunks(keys: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(keys), _BATCH):
        yield keys[i : i + _BATCH]


def _lookup(conn: sqlite3.Connection, keys: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(key, record) of those of `keys` the profiles table holds, batch by batch."""
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        for key, record in conn.execute(
            f"SELECT key, record FROM profiles WHERE key IN ({marks}) ORDER BY key", chunk
        ):
            yield key, record.encode()


class SqliteBucketSource(Connected, BucketSource):
    """Reads the current profiles: only the touched keys during a run."""

    def __init__(self, path: str, buckets: int, exists: bool) -> None:
        self.path = path
        self.buckets = buckets
        self.exists = exists  # False: no version yet (a dry run must not create the file)

    def _connect(self) -> sqlite3.Connection:
        return _connect(self.path)

    def open(self) -> None:
        if self.exists:
            super().open()

    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        if not self.exists:
            return
        for key, record in _lookup(self.conn, keys):
            yield key + records.SEPARATOR + record + b"\n"


class SqliteBucketSink(Connected, BucketSink):
    """Stages a bucket's changes in the execution's staging rows."""

    def __init__(self, path: str, execution_id: str) -> None:
        self.path = path
        self.execution_id = execution_id

    def _connect(self) -> sqlite3.Connection:
        return _connect(self.path)

    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        # One row a change: the new record (NULL: deleted) and the state before.
        rows: list[tuple[str, int, bytes, str | None, str | None]] = []
        for line in lines:
            key, record = records.split(line)
            rows.append((self.execution_id, bucket, key, record.decode(), before[key]))
        rows += [(self.execution_id, bucket, key, None, before[key]) for key in deleted]
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # A retried bundle replaces what the bucket staged before.
            conn.execute(
                "DELETE FROM staging WHERE execution_id = ? AND bucket = ?",
                (self.execution_id, bucket),
            )
            conn.executemany(
                "INSERT INTO staging (execution_id, bucket, key, record, before) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
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
    # A file on this machine; each run's work folder beside it.
    capabilities = Capabilities(
        reachable_from_remote_workers=False,
        work_folder="store",
        keeps_versions=False,
        holds_nul=True,
    )

    @classmethod
    def at(
        cls, location: Location, *, buckets: int | None = None, work_root: str | None = None
    ) -> SqliteStore:
        return cls(location.given, buckets=buckets)

    def __init__(self, url: str, *, buckets: int | None = None) -> None:
        self.url = url
        self.path = os.path.abspath(path_of(url))
        check_bucket_count(buckets)
        self._requested_buckets = buckets
        self._conn: sqlite3.Connection | None = None
        self.buckets = buckets or DEFAULT_BUCKETS
        if self._schema_version() > 0 and self.exists():
            self._load_buckets()

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

    def _run(
        self, conn: sqlite3.Connection, template: str, params: Sequence[Any] = ()
    ) -> list[Any]:
        return conn.execute(template.format(**_TEMPLATE_NAMES), params).fetchall()

    @contextmanager
    def _read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot (WAL)."""
        conn = _connect(self.path)
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.url}: {e}") from e
        finally:
            conn.close()

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
                self._set_meta("buckets", self.buckets)
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

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _database_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)

    def _staged_buckets(self, execution_id: str) -> int:
        sql = "SELECT count(*) FROM staging_buckets WHERE execution_id = ?"
        return int(self._sql(sql, (execution_id,))[0][0])

    def _publish_staged(self, version: Version, execution_id: str, fingerprints: list[str]) -> None:
        conn = self.conn
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
        conn.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?)",
            (version.number, version.parent, execution_id, version.created_at, version.profiles,
             json.dumps(version.execution)),
        )  # fmt: skip
        self._record_changes(version.number, "staging WHERE execution_id = {p}", (execution_id,))
        conn.executemany(
            "INSERT INTO ledger VALUES (?, ?, ?, ?)",
            [(fp, version.number, execution_id, version.created_at) for fp in fingerprints],
        )
        self._set_meta("current_version", version.number)
        conn.execute("DELETE FROM staging WHERE execution_id = ?", (execution_id,))
        conn.execute("DELETE FROM staging_buckets WHERE execution_id = ?", (execution_id,))

    def abort(self, staging: Staging) -> None:
        remove_work(staging.work_dir)
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

    # --- reading ------------------------------------------------------------

    def _executions(self, column: str | None = None, value: Any = None) -> list[Version]:
        where = f"WHERE {column} = ?" if column else ""
        rows = self._sql(
            f"SELECT {_VERSION_COLUMNS} FROM executions {where} ORDER BY version",
            () if column is None else (value,),
        )
        return [_version(row) for row in rows]

    def _records(
        self, after: bytes | None, version: Version | None
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._read_snapshot() as conn:
            current = conn.execute(
                "SELECT value FROM store_meta WHERE name = 'current_version'"
            ).fetchone()
            if version is not None and (current is None or int(current[0]) != version.number):
                raise self._no_longer_current(version)
            sql = "SELECT key, record FROM profiles WHERE key > ? ORDER BY key"
            for key, record in conn.execute(sql, (after or b"",)):
                yield key, record.encode()

    def _lookup(self, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        return _lookup(self.conn, keys)

    def _lookup_in(
        self, conn: sqlite3.Connection, keys: list[bytes]
    ) -> Iterator[tuple[bytes, bytes]]:
        return _lookup(conn, keys)

    def _integrity_problems(self) -> list[str]:
        return [f"{self.path}: {r[0]}" for r in self._sql("PRAGMA quick_check") if r[0] != "ok"]
