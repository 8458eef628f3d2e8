"""The PostgreSQL store (`stores/postgres.py`) against a real server the suite
starts itself (tests/postgres_server.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import psycopg
import pytest

from profile_import.stores import failpoints
from profile_import.stores.base import StoreError
from profile_import.stores.folders import open_files
from profile_import.stores.postgres import PostgresStore, parse_url

from ..helpers import (
    check_a_kill_leaves_before_or_after,
    run_cli,
    upsert,
    without_times,
    write_lines,
)
from ..object_servers import new_bucket, put
from .staged_by_hand import BUCKETS, emails, key, line, stage


@pytest.fixture
def url(postgres: str) -> str:
    return f"postgresql:///{postgres}?table=t_{uuid.uuid4().hex[:12]}"


def sql(query: str) -> list[tuple[object, ...]]:
    with psycopg.connect("postgresql:///postgres", autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def test_the_url_names_the_table_and_schema_not_the_password() -> None:
    assert parse_url("postgresql://u@h:5432/db?table=p&schema=s&sslmode=require") == (
        "postgresql://u@h:5432/db?sslmode=require",
        "s",
        "p",
    )
    assert parse_url("postgresql:///db")[1:] == ("public", "profiles")
    with pytest.raises(StoreError, match="letters, digits or _"):
        parse_url('postgresql:///db?table=a";drop')


def test_the_table_is_readable_with_plain_sql(url: str) -> None:
    """What a publish gives the readers is checked on every store
    (test_store_contract.py); here, the profiles table other services read."""
    store = PostgresStore(url, buckets=BUCKETS)
    staging, buckets = stage(store, "e1", [line("a", {"x": 1}), line("b", {"x": 2})])
    store.commit(staging, {"execution_id": "e1"}, 2, buckets, ["fp1"])
    staging, buckets = stage(store, "e2", [line("c", {"x": 3})], deleted=[key("a")])
    store.commit(staging, {"execution_id": "e2"}, 0, buckets, ["fp2"])
    table = parse_url(url)[2]
    assert sql(f"SELECT email_hash, user_profile ->> 'x' FROM {table} ORDER BY key") == [
        ("b", "2"),
        ("c", "3"),
    ]
    assert sql(f"SELECT fingerprint, version, execution_id FROM {table}_ledger ORDER BY 1") == [
        ("fp1", 1, "e1"),
        ("fp2", 2, "e2"),
    ]


def test_the_stage_of_a_dead_run_is_dropped_by_the_next_run(url: str) -> None:
    store = PostgresStore(url, buckets=BUCKETS)
    stage(store, "dead", [line("a", {"x": 1})])
    table = parse_url(url)[2]
    count = f"SELECT count(*) FROM pg_tables WHERE tablename LIKE '{table}_stage_%'"
    assert sql(count) == [(1,)]
    staging, buckets = stage(store, "next", [line("b", {"x": 2})])
    assert sql(count) == [(1,)]  # the dead run's is gone, the new run's is there
    store.commit(staging, {"execution_id": "next"}, 1, buckets, [])
    assert sql(count) == [(0,)] and emails(store) == ["b"]


def test_a_newer_schema_is_refused(url: str) -> None:
    store = PostgresStore(url, buckets=BUCKETS)
    staging, buckets = stage(store, "e1", [line("a", {})])
    store.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    sql(f"INSERT INTO {parse_url(url)[2]}_schema_version VALUES (99, 'future')")
    with pytest.raises(StoreError, match="has schema version 99; this profile-import knows"):
        PostgresStore(url)


def test_a_table_that_is_not_a_store_is_refused(url: str) -> None:
    sql(f"CREATE TABLE {parse_url(url)[2]} (id integer)")
    result = run_cli("export", "--store", url)
    assert result.returncode == 1 and "exists but is not a profile store" in result.stderr


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
    tmp_path: Path, url: str, point: str, published: bool
) -> None:
    check_a_kill_leaves_before_or_after(url, tmp_path, point, published)
    table = parse_url(url)[2]
    assert sql(f"SELECT count(*) FROM pg_tables WHERE tablename LIKE '{table}_stage_%'") == [(0,)]


def test_an_unreachable_server_is_one_line() -> None:
    result = run_cli("export", "--store", "postgresql://nohost.invalid/db?table=p")
    assert result.returncode == 1
    assert result.stderr.startswith("profile-import: error: store postgresql://nohost.invalid")
    assert "cannot connect" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_connection_failure_says_its_cause_first(postgres: str) -> None:
    """libpq's cause, not only its hint: a database that does not exist, and
    a port nobody listens on."""
    from ..object_servers import _free_port

    missing = run_cli("export", "--store", "postgresql:///no_such_database?table=p")
    assert missing.returncode == 1
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    assert missing.stderr.startswith(
        "profile-import: error: store postgresql:///no_such_database?table=p: cannot connect: "
        'database "no_such_database" does not exist (server '
    ), missing.stderr
    port = _free_port()
    store = f"postgresql://127.0.0.1:{port}/{postgres}?table=p"
    refused = run_cli("versions", "--store", store)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"profile-import: error: store {store}: cannot connect: Connection refused "
        f'(server "127.0.0.1", port {port})\n'
    ), refused.stderr


NUL_LINES = [
    upsert({"email_hash": "a"}, {"n": 1, "text": "a literal \\u0000 is no NUL"}),
    upsert({"email_hash": "b"}, {"n": 2, "s": "x\x00y"}),
    upsert({"email_hash": "c"}, {"n": 3, "o": {"k\x00": 1}}),
    upsert({"email_hash": "d\x00"}, {"n": 4}),
    upsert({"compartment_id": "1", "user_account_id": "\x00"}, {"n": 5}),
    {"operation": "DELETE", "email_hash": "e", "user_profile": {"ignored": "\x00"}},
    upsert({"email_hash": "f"}, {"n": 6}),
]


def test_a_line_holding_nul_is_a_reject_not_a_failed_run(url: str, tmp_path: Path) -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000: such lines are rejected
    with their line numbers, and the run applies the others."""
    rejects = tmp_path / "rejects.ndjson"
    result = run_cli("run", "--store", url, "--rejects", rejects, "--report", "-",
                     write_lines(tmp_path / "in.ndjson", NUL_LINES))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["status"] == "SUCCEEDED_WITH_ERRORS"
    assert (report["counts"]["upserts"], report["counts"]["rejected"]) == (2, 4)
    found = [orjson.loads(x) for x in rejects.read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in found] == [
        (2, "INVALID_FIELD"),
        (3, "INVALID_FIELD"),
        (4, "INVALID_IDENTIFIER"),
        (5, "INVALID_IDENTIFIER"),
    ]
    assert all("U+0000" in r["message"] and "cannot hold" in r["message"] for r in found)
    exported = run_cli("export", "--store", url)
    assert without_times([orjson.loads(x) for x in exported.stdout.splitlines()]) == [
        {"email_hash": "a", "user_profile": {"n": 1, "text": "a literal \\u0000 is no NUL"}},
        {"email_hash": "f", "user_profile": {"n": 6}},
    ]


@pytest.mark.parametrize("end", ["abort", "commit"])
def test_a_work_folder_in_a_bucket_is_removed_when_the_run_ends(
    url: str, object_scheme: str, end: str
) -> None:
    """For workers elsewhere, a run's work folder (its reject files) is under a
    bucket URL; the run's end removes it, as it removes a local one."""
    root = f"{object_scheme}://{new_bucket(object_scheme)}/tmp/profile-import"
    store = PostgresStore(url, buckets=BUCKETS, work_root=root)
    staging, buckets = stage(store, "e1", [line("a", {"x": 1})])
    assert staging.work_dir == f"{root}/e1"
    put(f"{staging.work_dir}/rejects/0.ndjson", b"{}\n")
    put(f"{root}/other-run/rejects/0.ndjson", b"{}\n")
    if end == "abort":
        store.abort(staging)
    else:
        store.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    assert not open_files(root).exists("e1/rejects/0.ndjson")
    assert open_files(root).exists("other-run/rejects/0.ndjson")
