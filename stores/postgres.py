"""The PostgreSQL store: profiles in a table other services read.

`--store postgresql://user@host:5432/db?table=profiles&schema=public` (through
psycopg 3; the password from libpq's environment, `PGPASSWORD` or
`~/.pgpass`, never needed in the URL; `postgresql:///db` with `PGHOST` set
works too). `table` (default `profiles`) and `schema` (default `public`) name
the store; its other tables are named after the profiles table:

    <table>                  key (bytea, `export`'s order), the identifier
                             columns, user_profile (jsonb), created_at and
                             last_modified_at (timestamptz)
    <table>_executions       one row a published execution (its version)
    <table>_ledger           the input fingerprints each execution applied
    <table>_meta             bucket count and the current version
    <table>_schema_version   the migrations applied (`migrations/postgres.py`)
    <table>_staging_buckets  the buckets a run staged
    <table>_changes          the change records of each version (SPEC §6):
                             key, and the digest of the profile's state before
    <table>_stage_<run>      a run's staged changes (UNLOGGED, one table a run)

A run holds a session advisory lock (`pg_try_advisory_lock`, released by the
server if the run dies), reads only the profiles its commands touch
(`key = ANY(...)`, one query a bucket), stages only what changed with `COPY`,
and publishes in ONE transaction: a compare-and-swap on the current version,
`INSERT ... ON CONFLICT` and `DELETE` from its stage table, its execution and
ledger rows. Readers see the old state until that transaction commits, then
the new one; it locks only the rows it changes. A stage table left by a dead
run is dropped by the next run.
"""

from __future__ import annotations

import re
import tempfile
import time
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.idempotency import AppliedInput
from profile_import.core.identifiers import IDENTIFIER_FIELDS
from profile_import.core.locations import Location

from .base import (
    BucketSink,
    BucketSource,
    Capabilities,
    Staging,
    StoreError,
    StoreLocked,
    Version,
)
from .failpoints import STAGED, failpoint
from .migrations import latest, pending
from .migrations.postgres import MIGRATIONS
from .sql import (
    DEFAULT_BUCKETS,
    Connected,
    CurrentStateStore,
    check_bucket_count,
    remove_work,
)

_POLL_SECONDS = 0.2
_ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
_COLUMNS = (
    "key, user_profile::text, " + _ISO.format("created_at") + ", " + _ISO.format("last_modified_at")
)
_LOOKUP_SQL = f"SELECT {_COLUMNS} FROM {{profiles}} WHERE key = ANY(%s) ORDER BY key"
_TABLES = ("meta", "executions", "ledger", "staging_buckets", "schema_version", "changes")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise StoreError(
            "the PostgreSQL store needs psycopg: pip install 'profile-import[postgresql]'"
        ) from e
    return psycopg


def parse_url(url: str) -> tuple[str, str, str]:
    """(libpq connection URI, schema, table) of a store URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    table = query.pop("table", "profiles")
    schema = query.pop("schema", "public")
    for name, value in (("table", table), ("schema", schema)):
        if not value or len(value) > 63 or not value.replace("_", "a").isalnum():
            raise StoreError(f"store {url}: {name} must be 1 to 63 letters, digits or _")
    # Rebuilt by hand: urlunsplit drops the empty host of `postgresql:///db`.
    rest = urlencode(query)
    conninfo = url.split("?", 1)[0] + (f"?{rest}" if rest else "")
    return conninfo, schema, table


def _line(key: bytes, profile: str, created_at: str, modified_at: str) -> bytes:
    return records.encode(bytes(key), StoredProfile(orjson.loads(profile), created_at, modified_at))


# What a run reads: the identifier columns, and the profile as the server's
# jsonb text, put together into a store line without parsing the profile (a
# third of the run's reading cost: measured 0.55 s against 0.23 s for 40,000
# profiles). The fold parses it once; an unchanged profile's line is never
# written back, so its spacing (jsonb's `{"a": 1}`) is never stored.
_TOUCHED_SQL = (
    f"SELECT key, {', '.join(IDENTIFIER_FIELDS)}, user_profile::text, "
    + _ISO.format("created_at")
    + """ || '","last_modified_at":"' || """
    + _ISO.format("last_modified_at")
    + " FROM {profiles} WHERE key = ANY(%b) ORDER BY key"
)


def _touched_line(row: Sequence[Any]) -> bytes:
    key, *ident, profile, stamps = row
    fields = {
        name: value
        for name, value in zip(IDENTIFIER_FIELDS, ident, strict=True)
        if value is not None
    }
    return b"".join(
        (bytes(key), records.SEPARATOR, orjson.dumps(fields)[:-1], b',"user_profile":',
         profile.encode(), b',"created_at":"', stamps.encode(), b'"}\n')
    )  # fmt: skip


# libpq's words around the cause of a failed connection: "connection failed:
# connection to server at "h" (addr), port 5432 failed: CAUSE" then a hint line.
_CONNECTION_PREFIX = re.compile(
    r"^(?:connection failed: )?connection to server (?:at|on) (?P<server>.+?) failed: "
)


def connect_failure(error: Exception) -> str:
    """Why a connection failed, cause first, in one line: libpq's first line
    (the cause, then which server), without its hint on the next."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    first = lines[0]
    match = _CONNECTION_PREFIX.match(first)
    if match is None:
        return first
    cause = first[match.end() :].removeprefix("FATAL:").strip()
    return f"{cause} (server {match['server']})"


class _Names:
    """The store's tables, quoted: `{profiles}`, `{ledger}`, ... in SQL templates."""

    def __init__(self, schema: str, table: str) -> None:
        self.schema = schema
        self.table = table

    def ident(self, suffix: str | None = None) -> str:
        name = self.table if suffix is None else f"{self.table}_{suffix}"
        if len(name) > 63:  # PostgreSQL's limit: a long table's own tables get a short name
            short = f"{self.table[:30]}_{zlib.crc32(self.table.encode()):08x}"
            name = f"{short}_{suffix}"
        return f'"{self.schema}"."{name}"'

    def stage(self, execution_id: str) -> str:
        return self.ident(f"stage_{zlib.crc32(execution_id.encode()):08x}")

    def sql(self, template: str) -> str:
        """`{p}` marks a parameter, in the statements `sql.py` writes for both databases."""
        tables = {t: self.ident(t) for t in _TABLES}
        return template.format(profiles=self.ident(), p="%s", **tables)


class PostgresBucketSource(Connected, BucketSource):
    """Reads the current profiles: only the touched keys, one query a bucket."""

    def __init__(self, conninfo: str, names: _Names, exists: bool) -> None:
        self.conninfo = conninfo
        self.names = names
        self.exists = exists

    def _connect(self) -> Any:
        return _psycopg().connect(self.conninfo, autocommit=True)

    def read_keys(self, bucket: int, keys: Sequence[bytes]) -> Iterator[bytes]:
        if not self.exists:
            return
        for row in self.conn.execute(self.names.sql(_TOUCHED_SQL), (list(keys),)):
            yield _touched_line(row)


class PostgresBucketSink(Connected, BucketSink):
    """Stages a bucket's changes with COPY into the run's stage table."""

    def __init__(self, conninfo: str, names: _Names, execution_id: str) -> None:
        self.conninfo = conninfo
        self.names = names
        self.execution_id = execution_id

    def _connect(self) -> Any:
        return _psycopg().connect(self.conninfo, autocommit=True)

    def write_changes(
        self,
        bucket: int,
        lines: Sequence[bytes],
        deleted: Sequence[bytes],
        before: Mapping[bytes, str | None],
    ) -> None:
        stage = self.names.stage(self.execution_id)
        conn = self.conn
        with conn.transaction():
            # A retried bundle replaces what the bucket staged before.
            conn.execute(f"DELETE FROM {stage} WHERE bucket = %s", (bucket,))
            columns = ", ".join(IDENTIFIER_FIELDS)
            copy_sql = (
                f"COPY {stage} (bucket, key, {columns}, user_profile, created_at, "
                "last_modified_at, before) FROM STDIN"
            )
            with conn.cursor().copy(copy_sql) as copy:
                for line in lines:
                    key, record = records.split(line)
                    obj = orjson.loads(record)
                    ident = [obj.get(name) for name in IDENTIFIER_FIELDS]
                    profile = orjson.dumps(obj["user_profile"]).decode()
                    created, modified = obj["created_at"], obj["last_modified_at"]
                    copy.write_row((bucket, key, *ident, profile, created, modified, before[key]))
                for key in deleted:
                    nones = [None] * len(IDENTIFIER_FIELDS)
                    copy.write_row((bucket, key, *nones, None, None, None, before[key]))
            conn.execute(
                self.names.sql(
                    "INSERT INTO {staging_buckets} VALUES (%s, %s) ON CONFLICT DO NOTHING"
                ),
                (self.execution_id, bucket),
            )
        failpoint(STAGED)


def _version(row: Sequence[Any]) -> Version:
    number, parent, created_at, profiles, execution = row
    return Version(number, parent, created_at, profiles, execution)


_VERSION_SQL = (
    f"SELECT version, parent, {_ISO.format('created_at')}, profiles, execution FROM {{executions}}"
)


class PostgresStore(CurrentStateStore):
    kind = "PostgreSQL"
    migrations = MIGRATIONS
    # A server workers elsewhere reach; text and jsonb refuse U+0000.
    capabilities = Capabilities(
        reachable_from_remote_workers=True,
        work_folder="work_root",
        keeps_versions=False,
        holds_nul=False,
    )

    @classmethod
    def at(
        cls, location: Location, *, buckets: int | None = None, work_root: str | None = None
    ) -> PostgresStore:
        return cls(location.given, buckets=buckets, work_root=work_root)

    def __init__(
        self, url: str, *, buckets: int | None = None, work_root: str | None = None
    ) -> None:
        self.url = url
        # Where runs keep their work folders (the reject files of each split):
        # None, a temporary folder here; for workers elsewhere, a bucket URL.
        self.work_root = work_root
        self.conninfo, schema, table = parse_url(url)
        self.names = _Names(schema, table)
        check_bucket_count(buckets)
        self._requested_buckets = buckets
        self._conn: Any = None
        self.buckets = buckets or DEFAULT_BUCKETS
        if self.exists():
            self._load_buckets()

    # --- the database -------------------------------------------------------

    @property
    def conn(self) -> Any:
        if self._conn is None:
            psycopg = _psycopg()
            try:
                self._conn = psycopg.connect(self.conninfo, autocommit=True)
            except psycopg.Error as e:
                raise StoreError(f"store {self.url}: cannot connect: {connect_failure(e)}") from e
        return self._conn

    def _run(self, conn: Any, template: str, params: Sequence[Any] = ()) -> list[Any]:
        cursor = conn.execute(self.names.sql(template), params)
        return cast(list[Any], cursor.fetchall()) if cursor.description else []

    @contextmanager
    def _read_snapshot(self) -> Iterator[Any]:
        """One snapshot (REPEATABLE READ)."""
        psycopg = _psycopg()
        conn = psycopg.connect(self.conninfo)
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                yield conn
        except psycopg.Error as e:
            raise StoreError(f"store {self.url}: {e}") from e
        finally:
            conn.close()

    def _sql(self, template: str, params: Sequence[Any] = ()) -> list[Any]:
        psycopg = _psycopg()
        try:
            cursor = self.conn.execute(self.names.sql(template), params)
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as e:
            raise StoreError(f"store {self.url}: {str(e).strip().splitlines()[0]}") from e

    def _schema_version(self) -> int:
        found = self._sql("SELECT to_regclass(%s)", (self.names.ident("schema_version"),))[0][0]
        if found is None:
            if self._sql("SELECT to_regclass(%s)", (self.names.ident(),))[0][0] is not None:
                raise StoreError(
                    f"store {self.url}: table {self.names.ident()} exists but is not a "
                    f"profile store (no {self.names.table}_schema_version table)"
                )
            return 0
        number = self._sql("SELECT max(version) FROM {schema_version}")[0][0] or 0
        if number > latest(MIGRATIONS):
            raise StoreError(
                f"store {self.url} has schema version {number}; this profile-import knows "
                f"versions up to {latest(MIGRATIONS)}: upgrade profile-import"
            )
        return int(number)

    def _migrate(self) -> None:
        conn = self.conn
        self._sql(f'CREATE SCHEMA IF NOT EXISTS "{self.names.schema}"')
        self._sql(
            "CREATE TABLE IF NOT EXISTS {schema_version} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in pending(MIGRATIONS, self._schema_version()):
            with conn.transaction():
                for statement in migration.statements:
                    conn.execute(self.names.sql(statement))
                conn.execute(
                    self.names.sql("INSERT INTO {schema_version} VALUES (%s, %s)"),
                    (migration.version, migration.description),
                )

    def _meta(self, name: str) -> str | None:
        rows = self._sql("SELECT value FROM {meta} WHERE name = %s", (name,))
        return rows[0][0] if rows else None

    # --- the run ------------------------------------------------------------

    def lock(self, timeout: float = 0.0) -> AbstractContextManager[None]:
        return self._locked(timeout)

    @contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        # A session lock on a connection of its own: the server releases it
        # when the run's process dies.
        psycopg = _psycopg()
        try:
            session = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error as e:
            raise StoreError(f"store {self.url}: cannot connect: {connect_failure(e)}") from e
        lock_id = zlib.crc32(f"profile-import:{self.names.ident()}".encode())
        deadline = time.monotonic() + timeout
        try:
            while not session.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,)).fetchone()[0]:
                if time.monotonic() >= deadline:
                    holder = session.execute(
                        "SELECT pid, client_addr, backend_start FROM pg_locks "
                        "JOIN pg_stat_activity USING (pid) "
                        "WHERE locktype = 'advisory' AND objid::text::bigint = %s",
                        (lock_id,),
                    ).fetchone()
                    who = f" (server process {holder[0]}, since {holder[2]:%Y-%m-%dT%H:%M:%SZ})"
                    raise StoreLocked(
                        f"store {self.url} is locked by another run{who if holder else ''}; "
                        "wait for it or pass --lock-timeout SECONDS"
                    )
                time.sleep(_POLL_SECONDS)
            yield
        finally:
            with suppress(psycopg.Error):
                session.close()

    def applied_inputs(
        self, version: Version | None, fingerprints: Collection[str]
    ) -> dict[str, AppliedInput]:
        if version is None or not fingerprints:
            return {}
        rows = self._sql(
            f"SELECT fingerprint, execution_id, version, {_ISO.format('finished_at')} "
            "FROM {ledger} WHERE version <= %s AND fingerprint = ANY(%s) ORDER BY version",
            (version.number, sorted(set(fingerprints))),
        )
        return {fp: AppliedInput(fp, execution, number, at) for fp, execution, number, at in rows}

    def source(self, version: Version | None) -> PostgresBucketSource:
        return PostgresBucketSource(self.conninfo, self.names, version is not None)

    def _work_dir(self, execution_id: str) -> str:
        if self.work_root is None:
            return tempfile.mkdtemp(prefix=f"profile-import-{execution_id}-")
        return f"{self.work_root.rstrip('/')}/{execution_id}"

    def begin(self, execution_id: str, parent: Version | None) -> Staging:
        self._migrate()
        conn = self.conn
        columns = ", ".join(f"{name} text" for name in IDENTIFIER_FIELDS)
        with conn.transaction():
            if self._current_number() == 0:
                self._set_meta("buckets", self.buckets)
            else:
                self._load_buckets()
            # What dead runs staged: they never published it.
            self._drop_stages()
            conn.execute(
                f"CREATE UNLOGGED TABLE {self.names.stage(execution_id)} (bucket integer NOT NULL, "
                f"key bytea NOT NULL, {columns}, user_profile jsonb, created_at timestamptz, "
                "last_modified_at timestamptz, before text, PRIMARY KEY (bucket, key))"
            )
        return Staging(
            execution_id=execution_id,
            parent=parent,
            source=self.source(parent),
            sink=PostgresBucketSink(self.conninfo, self.names, execution_id),
            work_dir=self._work_dir(execution_id),
        )

    def _drop_stages(self, execution_id: str | None = None) -> None:
        """Drops the stage tables of dead runs (or of one execution)."""
        if execution_id is not None:
            self._sql(f"DROP TABLE IF EXISTS {self.names.stage(execution_id)}")
            self._sql("DELETE FROM {staging_buckets} WHERE execution_id = %s", (execution_id,))
            return
        # `<table>_stage_` and 8 hex digits: never another store's table.
        prefix = self.names.ident("stage_00000000").split(".", 1)[1].strip('"')[:-8]
        rows = self._sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)",
            (self.names.schema, prefix),
        )
        for (name,) in rows:
            tail = name[len(prefix) :]
            if len(tail) == 8 and all(c in "0123456789abcdef" for c in tail):
                self._sql(f'DROP TABLE IF EXISTS "{self.names.schema}"."{name}"')
        self._sql("DELETE FROM {staging_buckets}")

    def _write_transaction(self) -> AbstractContextManager[None]:
        return cast(AbstractContextManager[None], self.conn.transaction())

    def _database_errors(self) -> tuple[type[Exception], ...]:
        return (_psycopg().Error,)

    def _current_for_update(self) -> int:
        rows = self._sql("SELECT value FROM {meta} WHERE name = 'current_version' FOR UPDATE")
        return int(rows[0][0]) if rows else 0

    def _staged_buckets(self, execution_id: str) -> int:
        sql = "SELECT count(*) FROM {staging_buckets} WHERE execution_id = %s"
        return int(self._sql(sql, (execution_id,))[0][0])

    def _publish_staged(self, version: Version, execution_id: str, fingerprints: list[str]) -> None:
        stage = self.names.stage(execution_id)
        columns = ", ".join(IDENTIFIER_FIELDS)
        self._sql(
            f"INSERT INTO {{profiles}} (key, {columns}, user_profile, created_at, "
            f"last_modified_at) SELECT key, {columns}, user_profile, created_at, "
            f"last_modified_at FROM {stage} WHERE user_profile IS NOT NULL "
            "ON CONFLICT (key) DO UPDATE SET user_profile = excluded.user_profile, "
            "created_at = excluded.created_at, last_modified_at = excluded.last_modified_at"
        )
        self._sql(
            f"DELETE FROM {{profiles}} p USING {stage} s "
            "WHERE s.user_profile IS NULL AND p.key = s.key"
        )
        self._sql(
            "INSERT INTO {executions} VALUES (%s, %s, %s, %s, %s, %s)",
            (version.number, version.parent, execution_id, version.created_at, version.profiles,
             orjson.dumps(version.execution).decode()),
        )  # fmt: skip
        self._record_changes(version.number, stage)
        with self.conn.cursor() as cursor:
            cursor.executemany(
                self.names.sql("INSERT INTO {ledger} VALUES (%s, %s, %s, %s)"),
                [(fp, version.number, execution_id, version.created_at) for fp in fingerprints],
            )
        self._set_meta("current_version", version.number)
        self._sql("DELETE FROM {staging_buckets} WHERE execution_id = %s", (execution_id,))
        self._sql(f"DROP TABLE {stage}")

    def abort(self, staging: Staging) -> None:
        remove_work(staging.work_dir)
        with suppress(StoreError):
            if self._schema_version() > 0:
                self._drop_stages(staging.execution_id)

    # --- reading ------------------------------------------------------------

    def _executions(self, column: str | None = None, value: Any = None) -> list[Version]:
        where = f" WHERE {column} = %s" if column else ""
        rows = self._sql(
            _VERSION_SQL + where + " ORDER BY version", () if column is None else (value,)
        )
        return [_version(row) for row in rows]

    def _records(
        self, after: bytes | None, version: Version | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Read through a server-side cursor."""
        with self._read_snapshot() as conn:
            current = conn.execute(
                self.names.sql("SELECT value FROM {meta} WHERE name = 'current_version'")
            ).fetchone()
            if version is not None and (current is None or int(current[0]) != version.number):
                raise self._no_longer_current(version)
            sql = f"SELECT {_COLUMNS} FROM {{profiles}} WHERE key > %s ORDER BY key"
            with conn.cursor(name="profile_import_read") as cursor:
                cursor.itersize = 10_000
                cursor.execute(self.names.sql(sql), (after or b"",))
                for row in cursor:
                    yield records.split(_line(*row))

    def _lookup(self, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        for row in self._sql(_LOOKUP_SQL, (keys,)):
            yield records.split(_line(*row))

    def _lookup_in(self, conn: Any, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        for row in self._run(conn, _LOOKUP_SQL, (keys,)):
            yield records.split(_line(*row))
