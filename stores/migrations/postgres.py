"""The schema of the PostgreSQL store, step by step (see `stores.postgres`).

Names in braces are the store's tables, quoted, in its schema: `{profiles}` is
the `table` of the store's URL, the others are named after it
(`profiles_executions`, ...). Never edit a released step: add the next one.
"""

from __future__ import annotations

from . import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "profiles, executions, ledger and staging buckets",
        (
            # The store's settings and its current version (the publish's
            # compare-and-swap counter).
            "CREATE TABLE {meta} (name text PRIMARY KEY, value text NOT NULL)",
            # One row a profile. `key` is the identifier's key: its byte order
            # is `export`'s order. One of the identifier forms is set.
            """CREATE TABLE {profiles} (
                key bytea PRIMARY KEY,
                compartment_id text,
                user_account_id text,
                email_hash text,
                user_agent_id text,
                user_profile jsonb NOT NULL,
                created_at timestamptz NOT NULL,
                last_modified_at timestamptz NOT NULL
            )""",
            # One row a published execution: its version, as `versions` lists it.
            """CREATE TABLE {executions} (
                version bigint PRIMARY KEY,
                parent bigint,
                execution_id text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL,
                profiles bigint NOT NULL,
                execution jsonb NOT NULL
            )""",
            # The inputs each execution applied, by fingerprint (idempotency).
            """CREATE TABLE {ledger} (
                fingerprint text NOT NULL,
                version bigint NOT NULL REFERENCES {executions} (version),
                execution_id text NOT NULL,
                finished_at timestamptz NOT NULL,
                PRIMARY KEY (fingerprint, version)
            )""",
            # The buckets a run staged (its rows are in a table of its own).
            """CREATE TABLE {staging_buckets} (
                execution_id text NOT NULL,
                bucket integer NOT NULL,
                PRIMARY KEY (execution_id, bucket)
            )""",
        ),
    ),
    Migration(
        2,
        "change records (SPEC 6): a changes table",
        (
            # One row a profile a version changed: the digest of its state
            # before (NULL: it was absent), what `changes --since` compares.
            """CREATE TABLE {changes} (
                version bigint NOT NULL,
                key bytea NOT NULL,
                before text,
                PRIMARY KEY (version, key)
            )""",
            # The versions published before change records were kept: `changes
            # --since` answers from the current one on.
            "INSERT INTO {meta} SELECT 'changes_since_min', value FROM {meta} "
            "WHERE name = 'current_version'",
        ),
    ),
)
