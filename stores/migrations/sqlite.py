"""The schema of the SQLite store, step by step (see `stores.sqlite`).

Never edit a released step: add the next one.
"""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "profiles, executions, ledger and staging",
        (
            # The store's settings and its current version (the publish's
            # compare-and-swap counter).
            "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # One row a profile. `record` is exactly what `export` prints; the
            # columns after it are computed from it, for readers' SQL.
            """CREATE TABLE profiles (
                key BLOB PRIMARY KEY,
                record TEXT NOT NULL,
                compartment_id TEXT GENERATED ALWAYS AS (json_extract(record, '$.compartment_id')),
                user_account_id TEXT
                    GENERATED ALWAYS AS (json_extract(record, '$.user_account_id')),
                email_hash TEXT GENERATED ALWAYS AS (json_extract(record, '$.email_hash')),
                user_agent_id TEXT GENERATED ALWAYS AS (json_extract(record, '$.user_agent_id')),
                user_profile TEXT GENERATED ALWAYS AS (json_extract(record, '$.user_profile')),
                created_at TEXT GENERATED ALWAYS AS (json_extract(record, '$.created_at')),
                last_modified_at TEXT
                    GENERATED ALWAYS AS (json_extract(record, '$.last_modified_at'))
            ) WITHOUT ROWID""",
            # One row a published execution: its version, as `versions` lists it.
            """CREATE TABLE executions (
                version INTEGER PRIMARY KEY,
                parent INTEGER,
                execution_id TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                profiles INTEGER NOT NULL,
                execution TEXT NOT NULL
            )""",
            # The inputs each execution applied, by fingerprint (idempotency).
            """CREATE TABLE ledger (
                fingerprint TEXT NOT NULL,
                version INTEGER NOT NULL REFERENCES executions (version),
                execution_id TEXT NOT NULL,
                finished_at TEXT NOT NULL,
                PRIMARY KEY (fingerprint, version)
            )""",
            # What a run in progress staged: new records, NULL for a delete.
            """CREATE TABLE staging (
                execution_id TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                key BLOB NOT NULL,
                record TEXT,
                PRIMARY KEY (execution_id, bucket, key)
            ) WITHOUT ROWID""",
            # The buckets a run staged (those with no change too): checked at commit.
            """CREATE TABLE staging_buckets (
                execution_id TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                PRIMARY KEY (execution_id, bucket)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "change records (SPEC 6): a changes table, and the state before in staging",
        (
            # One row a profile a version changed: the digest of its state
            # before (NULL: it was absent), what `changes --since` compares.
            """CREATE TABLE changes (
                version INTEGER NOT NULL,
                key BLOB NOT NULL,
                before TEXT,
                PRIMARY KEY (version, key)
            ) WITHOUT ROWID""",
            "ALTER TABLE staging ADD COLUMN before TEXT",
            # The versions published before change records were kept: `changes
            # --since` answers from the current one on.
            "INSERT INTO store_meta SELECT 'changes_since_min', value FROM store_meta "
            "WHERE name = 'current_version'",
        ),
    ),
)
