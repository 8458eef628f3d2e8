"""The SQLite store (`stores/sqlite.py`): only touched profiles read, only
changes staged, one compare-and-swap transaction to publish, migrations."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pytest

from profile_import.core import records
from profile_import.core.bucket import apply_to_bucket, bucket_changes
from profile_import.core.changes import Change, state_digest
from profile_import.core.fold import DELETE, Command
from profile_import.stores import failpoints, open_store
from profile_import.stores.base import StoreError
from profile_import.stores.migrations import Migration, pending
from profile_import.stores.sqlite import SqliteStore, path_of

from ..helpers import (
    CLI,
    ONE_WORKER,
    check_a_kill_leaves_before_or_after,
    run_cli,
    upsert,
    without_times,
    write_lines,
)
from .staged_by_hand import BUCKETS, NOW, THEN, key, line, stage


def up(profile: dict[str, object]) -> Command:
    return Command("UPSERT", profile, False, False)


# --- what a run changes in a bucket (core.bucket.bucket_changes) -------------


def test_bucket_changes_are_what_apply_to_bucket_changes() -> None:
    stored = [line(n, {"v": n}) for n in ("b", "d", "f", "h", "j")]

    def commands() -> dict[bytes, list[Command]]:
        return {
            key("a"): [up({"v": "new"})],  # created
            key("d"): [up({"w": 1})],  # updated
            key("e"): [Command(DELETE)],  # delete of a missing profile
            key("f"): [Command(DELETE)],  # deleted
            key("h"): [up({"v": "h"})],  # unchanged: not staged
            key("z"): [up({"v": "z"}), Command(DELETE)],  # created then deleted: nothing
        }

    whole: Counter[str] = Counter()
    after = list(apply_to_bucket(stored, commands(), NOW, whole))
    touched = [x for x in stored if records.split(x)[0] in commands()]
    tally: Counter[str] = Counter()
    found: list[Change] = []
    changed, deleted = bucket_changes(touched, commands(), NOW, tally, found)
    assert tally == whole
    # Each change's state before, from the record it parsed, is the record's.
    assert [c.before_state for c in found] == [
        None if c.before is None else state_digest(c.before) for c in found
    ]
    assert [c.key for c in found if c.before is not None] == [key("d"), key("f")]
    assert [records.split(x)[0] for x in changed] == [key("a"), key("d")]
    assert deleted == [key("f")]
    # The stored bucket with these changes applied is the bucket apply_to_bucket gives.
    rebuilt = {records.split(x)[0]: x for x in stored}
    rebuilt.update({records.split(x)[0]: x for x in changed})
    for k in deleted:
        del rebuilt[k]
    assert [rebuilt[k] for k in sorted(rebuilt)] == after


# --- the store, driven as the launcher and the pipeline drive it -------------


def store_at(tmp_path: Path, name: str = "p.db") -> SqliteStore:
    return SqliteStore(f"sqlite:///{tmp_path / name}", buckets=BUCKETS)


def test_urls_name_relative_and_absolute_files() -> None:
    assert path_of("sqlite:///profiles.db") == "profiles.db"
    assert path_of("sqlite:////var/lib/p.db") == "/var/lib/p.db"
    with pytest.raises(StoreError, match="or sqlite:////absolute"):
        path_of("sqlite://host/p.db")


def test_rollback_and_compact_are_refused_in_one_line_and_change_nothing(
    tmp_path: Path,
) -> None:
    """A store that keeps only its current state is no version history: the
    commands that need one say so, from what the store declares."""
    store = store_at(tmp_path)
    staging, buckets = stage(store, "e1", [line("a", {"x": 1})])
    store.commit(staging, {"execution_id": "e1"}, 1, buckets, ["fp1"])
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert not open_store(url).capabilities.keeps_versions
    for args in (("rollback", "--to", "1"), ("compact",)):
        done = run_cli(*args, "--store", url)
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "keeps only its current state" in done.stderr
        assert f"{args[0]} needs a store that keeps them" in done.stderr
    assert [v.number for v in store.versions()] == [1] and store.verify().sound


def test_staging_of_a_dead_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    dead, _ = stage(store, "dead", [line("a", {"x": 1})])
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT count(*) FROM staging").fetchone() == (1,)
    staging, buckets = stage(store, "next", [line("b", {"x": 2})])
    assert db.execute("SELECT DISTINCT execution_id FROM staging").fetchall() == [("next",)]
    store.commit(staging, {"execution_id": "next"}, 1, buckets, [])
    assert db.execute("SELECT count(*) FROM staging").fetchone() == (0,)
    assert [orjson.loads(r)["email_hash"] for r in store.export()] == ["b"]
    assert not os.path.exists(dead.work_dir)


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = run_cli("export", "--store", url)
    assert result.returncode == 1 and f"no profile store at {url}" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- migrations ---------------------------------------------------------------


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    staging, buckets = stage(store, "e1", [line("a", {"x": 1})])
    store.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    db = sqlite3.connect(store.path)
    db.execute("INSERT INTO schema_version VALUES (99, 'from the future', 'now')")
    db.commit()
    with pytest.raises(StoreError, match="has schema version 99; this profile-import knows"):
        store_at(tmp_path)


def test_a_database_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE orders (id INTEGER)")
    db.commit()
    with pytest.raises(StoreError, match="not a profile store"):
        store_at(tmp_path, "other.db")


def test_migrations_apply_in_order_from_the_recorded_version() -> None:
    steps = (Migration(1, "a", ()), Migration(2, "b", ()), Migration(3, "c", ()))
    assert [m.version for m in pending(steps, 0)] == [1, 2, 3]
    assert [m.version for m in pending(steps, 2)] == [3]
    with pytest.raises(ValueError, match="not numbered"):
        pending((Migration(2, "b", ()),), 0)


def test_the_tables_are_readable_with_plain_sql(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    staging, buckets = stage(store, "e1", [line("a", {"first_name": "Ann"})])
    store.commit(staging, {"execution_id": "e1"}, 1, buckets, ["fp"])
    db = sqlite3.connect(store.path)
    row = db.execute(
        "SELECT email_hash, user_profile ->> '$.first_name', created_at FROM profiles"
    ).fetchone()
    assert row == ("a", "Ann", THEN)
    assert db.execute("SELECT fingerprint, version, execution_id FROM ledger").fetchall() == [
        ("fp", 1, "e1")
    ]
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- real runs through the command line ---------------------------------------


def test_a_run_stages_only_what_it_changes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    seed = [upsert({"email_hash": f"h{n}"}, {"n": n}) for n in range(300)]
    assert run_cli("run", "--store", url, "--rejects", os.devnull, "--report", os.devnull,
                   write_lines(tmp_path / "seed.ndjson", seed)).returncode == 0  # fmt: skip
    lines = [
        upsert({"email_hash": "h1"}, {"n": 1}),  # unchanged
        upsert({"email_hash": "h2"}, {"n": -2}),  # updated
        {"operation": "DELETE", "email_hash": "h3"},
        upsert({"email_hash": "new"}, {"n": 0}),
    ]
    argv = [*CLI, "run", "--quiet", "--store", url, "--report", os.devnull, "--rejects", os.devnull]
    argv += [*ONE_WORKER, str(write_lines(tmp_path / "four.ndjson", lines))]
    env = {**os.environ, failpoints.ENV: failpoints.DATA_WRITTEN}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = sqlite3.connect(tmp_path / "p.db")
    staged = db.execute("SELECT key, record IS NULL FROM staging ORDER BY key").fetchall()
    assert staged == [(key("h2"), 0), (key("h3"), 1), (key("new"), 0)]
    assert db.execute("SELECT count(*) FROM profiles").fetchone() == (300,)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "published"),
    [
        (failpoints.STAGED, False),
        (failpoints.DATA_WRITTEN, False),
        (failpoints.BEFORE_POINTER, False),
        (failpoints.AFTER_POINTER, True),
    ],
)
def test_a_kill_leaves_the_before_or_the_after_state(
    tmp_path: Path, point: str, published: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    check_a_kill_leaves_before_or_after(url, tmp_path, point, published)
    db = sqlite3.connect(tmp_path / "p.db")
    assert db.execute("SELECT count(*) FROM staging").fetchone() == (0,)


def test_a_dry_run_on_a_new_store_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    path = write_lines(tmp_path / "in.ndjson", [upsert({"email_hash": "a"}, {"x": 1})])
    result = run_cli("run", "--dry-run", "--store", url, "--report", "-", path)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"]["profiles_created"] == 1
    assert not (tmp_path / "p.db").exists()


def test_a_sqlite_store_keeps_nul_in_identifiers_and_profiles(tmp_path: Path) -> None:
    """Unlike PostgreSQL, SQLite keeps U+0000 (its records are JSON text, where
    it is the escape `\\u0000`): such lines are applied, and export gives them back."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    lines = [
        upsert({"email_hash": "b"}, {"s": "x\x00y", "o": {"k\x00": [1]}}),
        upsert({"email_hash": "d\x00"}, {"n": 4}),
        upsert({"compartment_id": "1", "user_account_id": "\x00"}, {"n": 5}),
    ]
    result = run_cli("run", "--store", url, "--rejects", os.devnull, "--report", "-",
                     write_lines(tmp_path / "in.ndjson", lines))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["counts"]["rejected"] == 0
    exported = run_cli("export", "--store", url)
    assert without_times([orjson.loads(x) for x in exported.stdout.splitlines()]) == [
        {"compartment_id": "1", "user_account_id": "\x00", "user_profile": {"n": 5}},
        {"email_hash": "b", "user_profile": {"s": "x\x00y", "o": {"k\x00": [1]}}},
        {"email_hash": "d\x00", "user_profile": {"n": 4}},
    ]
    assert run_cli("verify", "--store", url).returncode == 0
