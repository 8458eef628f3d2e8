"""The PostgreSQL store (`stores/postgres.py`) against a real server the suite
starts itself (tests/postgres_server.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import psycopg
import pytest

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores import failpoints, open_store
from profile_import.stores.base import Staging, StoreError, StoreLocked
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

THEN, NOW = "2026-01-01T00:00:00.000Z", "2026-11-23T00:00:00.000Z"
BUCKETS = 4


def key(name: str) -> bytes:
    return Identifier.email_hash(name).key


def line(name: str, profile: dict[str, object], at: str = THEN) -> bytes:
    return records.encode(key(name), StoredProfile(profile, at, at))


@pytest.fixture
def url(postgres: str) -> str:
    return f"postgresql:///{postgres}?table=t_{uuid.uuid4().hex[:12]}"


def sql(query: str) -> list[tuple[object, ...]]:
    with psycopg.connect("postgresql:///postgres", autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def before_unknown(changed: Sequence[bytes], gone: Sequence[bytes]) -> dict[bytes, str | None]:
    """Change records for changes staged by hand: each changed profile as created."""
    return {**{records.split(x)[0]: None for x in changed}, **{k: "" for k in gone}}


def stage(
    store: PostgresStore, execution: str, lines: list[bytes], deleted: Sequence[bytes] = ()
) -> tuple[Staging, int]:
    staging = store.begin(execution, store.current())
    by_bucket: dict[int, tuple[list[bytes], list[bytes]]] = {}
    for x in lines:
        by_bucket.setdefault(bucket_of(records.split(x)[0], BUCKETS), ([], []))[0].append(x)
    for k in deleted:
        by_bucket.setdefault(bucket_of(k, BUCKETS), ([], []))[1].append(k)
    for bucket, (changed, gone) in by_bucket.items():
        staging.sink.write_changes(bucket, changed, gone, before_unknown(changed, gone))
    return staging, len(by_bucket)


def emails(store: PostgresStore) -> list[str]:
    return [orjson.loads(r)["email_hash"] for r in store.export()]


def test_the_url_names_the_table_and_schema_not_the_password() -> None:
    assert parse_url("postgresql://u@h:5432/db?table=p&schema=s&sslmode=require") == (
        "postgresql://u@h:5432/db?sslmode=require",
        "s",
        "p",
    )
    assert parse_url("postgresql:///db")[1:] == ("public", "profiles")
    with pytest.raises(StoreError, match="letters, digits or _"):
        parse_url('postgresql:///db?table=a";drop')


def test_publish_and_read_back(url: str) -> None:
    store = PostgresStore(url, buckets=BUCKETS)
    assert not store.exists()
    staging, buckets = stage(store, "e1", [line("a", {"x": 1, "big": 2**40}), line("b", {"x": 2})])
    v1 = store.commit(staging, {"execution_id": "e1"}, 2, buckets, ["fp1"])
    assert (v1.number, v1.profiles) == (1, 2)
    reopened = open_store(url)
    assert reopened.buckets == BUCKETS and emails(reopened) == ["a", "b"]  # type: ignore[arg-type]
    got = orjson.loads(reopened.get(Identifier.email_hash("a")) or b"")
    assert got == {"email_hash": "a", "user_profile": {"x": 1, "big": 2**40},
                   "created_at": THEN, "last_modified_at": THEN}  # fmt: skip
    assert list(reopened.applied_inputs(v1, ["fp1", "fp2"])) == ["fp1"]

    staging, buckets = stage(store, "e2", [line("c", {"x": 3})], deleted=[key("a")])
    v2 = store.commit(staging, {"execution_id": "e2"}, 0, buckets, ["fp2"])
    assert [v.execution["execution_id"] for v in store.versions()] == ["e1", "e2"]
    assert [k for k, _ in store.scan(v2)] == [key("b"), key("c")]
    assert list(store.get_many(v2, [key("a"), key("c")])) == [key("c")]
    assert store.verify().sound
    table = parse_url(url)[2]
    assert sql(f"SELECT email_hash, user_profile ->> 'x' FROM {table} ORDER BY key") == [
        ("b", "2"),
        ("c", "3"),
    ]


def test_a_stale_parent_is_refused_and_publishes_nothing(url: str) -> None:
    store = PostgresStore(url, buckets=BUCKETS)
    staging, buckets = stage(store, "e1", [line("a", {"x": 1})])
    store.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    stale = store.begin("stale", None)  # as if it started before e1 published
    stale.sink.write_changes(bucket_of(key("b"), BUCKETS), [line("b", {})], [], {key("b"): None})
    with pytest.raises(StoreError, match="changed during the run"):
        store.commit(stale, {"execution_id": "stale"}, 1, 1, [])
    assert emails(store) == ["a"]


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


def test_a_reader_sees_the_old_or_the_new_state_never_a_mix(url: str) -> None:
    store = PostgresStore(url, buckets=BUCKETS)
    staging, buckets = stage(store, "e1", [line(n, {"v": 1}) for n in "abcd"])
    store.commit(staging, {"execution_id": "e1"}, 4, buckets, [])
    reading = store.export()
    first = next(reading)
    staging, buckets = stage(store, "e2", [line(n, {"v": 2}, NOW) for n in "abcd"])
    store.commit(staging, {"execution_id": "e2"}, 0, buckets, [])
    assert {orjson.loads(r)["user_profile"]["v"] for r in [first, *reading]} == {1}
    assert {orjson.loads(r)["user_profile"]["v"] for r in store.export()} == {2}


def test_the_advisory_lock_admits_one_run(url: str) -> None:
    with PostgresStore(url).lock(), pytest.raises(StoreLocked, match="locked by another run"):  # noqa: SIM117
        with PostgresStore(url).lock(timeout=0.3):
            pass


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
