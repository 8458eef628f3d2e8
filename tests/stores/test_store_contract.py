"""What every store does, checked the same way on all five (folder, SQLite,
PostgreSQL, S3, GCS).

Through the command line: a store that no run created is refused in one line;
runs publish numbered versions that `export`, `get` and `versions` read back,
`verify` finds them sound, `rollback` publishes an older version again where
the store keeps versions (and is refused in one line, changing nothing, where
it does not), and `prune` drops the older versions (no longer listed nor
answered by `changes --since`) and keeps the current state.

Through the store's interface, driven as the launcher and the pipeline drive
it (`begin`, each bucket's changes to the sink, `commit`): what a publish
gives the readers, a stale parent or a bucket count that does not add up
refused publishing nothing, a retried bucket replacing what it staged, a
retried commit reporting what it published, an aborted run changing nothing,
a reader's snapshot, the lock.

Each store's own tests (its tables, files, migrations, failure points) sit
beside this file."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores import capabilities, open_store
from profile_import.stores.base import StoreError, StoreLocked

from ..helpers import read_cli, run_cli, upsert, without_times, write_lines
from ..spec.test_conformance import FIXTURES, STORES
from .staged_by_hand import BUCKETS, NOW, THEN, emails, key, line, stage

pytestmark = [pytest.mark.spec(section=5), pytest.mark.spec(section=6)]

KINDS = [
    "folder",
    "sqlite",
    "postgresql",
    pytest.param("s3", marks=pytest.mark.slow),
    pytest.param("gs", marks=pytest.mark.slow),
]

FIRST = [upsert({"email_hash": "a"}, {"v": 1}), upsert({"email_hash": "b"}, {"v": 1})]
SECOND = [upsert({"email_hash": "b"}, {"v": 2}), upsert({"email_hash": "c"}, {"v": 2})]
AFTER_FIRST = [
    {"email_hash": "a", "user_profile": {"v": 1}},
    {"email_hash": "b", "user_profile": {"v": 1}},
]
AFTER_SECOND = [
    {"email_hash": "a", "user_profile": {"v": 1}},
    {"email_hash": "b", "user_profile": {"v": 2}},
    {"email_hash": "c", "user_profile": {"v": 2}},
]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store of one kind, on the suite's own servers."""
    kind: str = request.param
    if kind in FIXTURES:
        request.getfixturevalue(FIXTURES[kind])
    return str(STORES[kind](tmp_path, "contract"))


def two_runs(store: str, tmp_path: Path) -> None:
    for name, lines in (("first", FIRST), ("second", SECOND)):
        result = run_cli("run", "--store", store, write_lines(tmp_path / f"{name}.ndjson", lines))
        assert result.returncode == 0, result.stderr


def exported(store: str) -> list[dict[str, object]]:
    result = read_cli("export", "--store", store)
    assert result.returncode == 0, result.stderr
    return without_times([json.loads(line) for line in result.stdout.splitlines()])


def versions(store: str) -> tuple[list[int], int]:
    """The versions `versions` lists, and the one it marks current."""
    result = read_cli("versions", "--store", store)
    assert result.returncode == 0, result.stderr
    rows = [
        (line.startswith("*"), int(line.lstrip("* ").split()[0]))
        for line in result.stdout.splitlines()
    ]
    (current,) = [version for marked, version in rows if marked]
    return [version for _, version in rows], current


def keeps_versions(store: str) -> bool:
    return capabilities(store).keeps_versions


def test_runs_publish_versions_that_the_readers_read_back(store: str, tmp_path: Path) -> None:
    missing = read_cli("export", "--store", store)
    assert missing.returncode == 1
    assert missing.stderr == f"profile-import: error: no profile store at {store}\n"
    two_runs(store, tmp_path)
    assert exported(store) == AFTER_SECOND
    assert versions(store) == ([1, 2], 2)
    got = read_cli("get", "--store", store, "--email-hash", "b")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["user_profile"] == {"v": 2}


def test_verify_finds_the_published_version_sound(store: str, tmp_path: Path) -> None:
    two_runs(store, tmp_path)
    result = read_cli("verify", "--store", store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sound" in result.stdout


def test_rollback_publishes_an_older_version_or_is_refused_changing_nothing(
    store: str, tmp_path: Path
) -> None:
    two_runs(store, tmp_path)
    result = read_cli("rollback", "--store", store, "--to", "1")
    if keeps_versions(store):
        assert result.returncode == 0, result.stderr
        assert exported(store) == AFTER_FIRST
        assert versions(store)[1] == 3
    else:
        assert result.returncode == 1
        assert result.stderr.startswith("profile-import: error: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert exported(store) == AFTER_SECOND
        assert versions(store) == ([1, 2], 2)


def test_prune_drops_the_older_versions_and_keeps_the_current_state(
    store: str, tmp_path: Path
) -> None:
    """Every store says the same of a prune: the versions it dropped are no
    longer listed, nor answered by `changes --since` (SPEC §6), and the
    current state is untouched."""
    two_runs(store, tmp_path)
    result = read_cli("prune", "--store", store, "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "profile-import: pruned 1 version(s)\n"
    assert exported(store) == AFTER_SECOND
    assert versions(store) == ([2], 2)
    again = read_cli("prune", "--store", store, "--keep", "1")
    assert again.stderr == "profile-import: pruned 0 version(s)\n", again.stderr
    assert versions(store) == ([2], 2)
    if keeps_versions(store):
        refused = read_cli("rollback", "--store", store, "--to", "1")
        assert refused.returncode == 1, refused.stdout
        assert exported(store) == AFTER_SECOND
    since_pruned = read_cli("changes", "--store", store, "--since", "0")
    assert since_pruned.returncode == 1 and since_pruned.stdout == ""
    assert "the oldest --since this store answers is 1" in since_pruned.stderr
    since_kept = read_cli("changes", "--store", store, "--since", "1")
    assert since_kept.returncode == 0, since_kept.stderr
    assert len(since_kept.stdout.splitlines()) == 2  # b updated, c created
    verify = read_cli("verify", "--store", store)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --- the store's interface -----------------------------------------------------


def test_a_publish_is_what_the_readers_read_back(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    assert not opened.exists() and opened.current() is None
    staging, buckets = stage(opened, "e1", [line("a", {"x": 1, "big": 2**40}), line("b", {"x": 2})])
    v1 = opened.commit(staging, {"execution_id": "e1"}, 2, buckets, ["fp1", "fp1"])
    assert (v1.number, v1.parent, v1.profiles) == (1, None, 2)
    reopened = open_store(store)
    assert reopened.exists() and reopened.buckets == BUCKETS
    assert emails(reopened) == ["a", "b"]
    assert orjson.loads(reopened.get(Identifier.email_hash("a")) or b"") == {
        "email_hash": "a",
        "user_profile": {"x": 1, "big": 2**40},
        "created_at": THEN,
        "last_modified_at": THEN,
    }
    assert reopened.get(Identifier.email_hash("zz")) is None
    applied = reopened.applied_inputs(v1, ["fp1", "fp2"])
    assert list(applied) == ["fp1"] and applied["fp1"].execution_id == "e1"

    staging, buckets = stage(opened, "e2", [line("c", {"x": 3})], deleted=[key("a")])
    v2 = opened.commit(staging, {"execution_id": "e2"}, 0, buckets, ["fp2"])
    assert (v2.number, v2.parent, v2.profiles) == (2, 1, 2)
    assert [v.execution["execution_id"] for v in opened.versions()] == ["e1", "e2"]
    assert [k for k, _ in opened.scan(v2)] == [key("b"), key("c")]
    assert list(opened.get_many(v2, [key("a"), key("c")])) == [key("c")]
    assert opened.verify().sound and opened.verify().lines == 2


def test_a_stale_parent_is_refused_and_publishes_nothing(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    staging, buckets = stage(opened, "e1", [line("a", {"x": 1})])
    opened.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    stale = opened.begin("stale", None)  # as if it began before e1 published
    stale.sink.write_changes(bucket_of(key("b"), BUCKETS), [line("b", {})], [], {key("b"): None})
    with pytest.raises(StoreError, match="changed during the run"):
        opened.commit(stale, {"execution_id": "stale"}, 1, 1, [])
    assert emails(opened) == ["a"]


def test_a_reader_sees_the_old_or_the_new_state_never_a_mix(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    staging, buckets = stage(opened, "e1", [line(n, {"v": 1}) for n in "abcd"])
    opened.commit(staging, {"execution_id": "e1"}, 4, buckets, [])
    reading = opened.export()
    first = next(reading)  # the reader's snapshot starts here
    staging, buckets = stage(opened, "e2", [line(n, {"v": 2}, NOW) for n in "abcd"])
    opened.commit(staging, {"execution_id": "e2"}, 0, buckets, [])
    assert {orjson.loads(r)["user_profile"]["v"] for r in [first, *reading]} == {1}
    assert {orjson.loads(r)["user_profile"]["v"] for r in opened.export()} == {2}


def test_a_retried_commit_reports_the_version_it_published(store: str) -> None:
    """The final step retried after its publish (a worker lost after the
    commit, before its bundle was acknowledged) finds its execution published:
    the same version again, nothing rewritten. A discarded run's commit, or one
    whose base another execution moved, still publishes nothing."""
    opened = open_store(store, buckets=BUCKETS)
    staging, buckets = stage(opened, "e1", [line("a", {"x": 1})])
    opened.commit(staging, {"execution_id": "e1"}, 1, buckets, ["fp1"])
    staging, buckets = stage(opened, "e2", [line("b", {"x": 2})], deleted=[key("a")])
    first = opened.commit(staging, {"execution_id": "e2"}, 0, buckets, ["fp2"])
    before = opened.versions()
    again = opened.commit(staging, {"execution_id": "e2"}, 0, buckets, ["fp2"])
    assert again == first and (again.number, again.parent, again.profiles) == (2, 1, 1)
    assert opened.versions() == before and opened.current() == first
    assert emails(opened) == ["b"] and opened.verify().sound
    assert opened.applied_inputs(first, ["fp2"])["fp2"].version == 2

    discarded, buckets = stage(opened, "e3", [line("c", {"x": 3})])
    opened.abort(discarded)
    with pytest.raises(StoreError, match="nothing was published"):
        opened.commit(discarded, {"execution_id": "e3"}, 1, buckets, [])
    staging, buckets = stage(opened, "e4", [line("e", {"x": 4})])
    opened.commit(staging, {"execution_id": "e4"}, 1, buckets, [])
    stale = opened.begin("e5", first)  # as if it began before e4 published
    stale.sink.write_changes(bucket_of(key("d"), BUCKETS), [line("d", {})], [], {key("d"): None})
    with pytest.raises(StoreError, match="changed during the run"):
        opened.commit(stale, {"execution_id": "e5"}, 1, 1, [])
    assert emails(opened) == ["b", "e"] and opened.verify().sound


def test_the_lock_admits_one_run(store: str) -> None:
    with open_store(store).lock(), pytest.raises(StoreLocked):  # noqa: SIM117
        with open_store(store).lock(timeout=0.3):
            pass


def test_a_bucket_count_mismatch_publishes_nothing(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    staging, buckets = stage(opened, "e1", [line("a", {"x": 1})])
    with pytest.raises(StoreError, match=r"wrote 2 buckets but 1 are .*; nothing was published"):
        opened.commit(staging, {"execution_id": "e1"}, 1, buckets + 1, [])
    assert not opened.exists()


def test_a_retried_bucket_replaces_what_it_staged(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    staging = opened.begin("e1", None)
    bucket = bucket_of(key("a"), BUCKETS)
    staging.sink.write_changes(bucket, [line("a", {"try": 1})], [], {key("a"): None})
    staging.sink.write_changes(bucket, [line("a", {"try": 2})], [], {key("a"): None})
    opened.commit(staging, {"execution_id": "e1"}, 1, 1, [])
    assert orjson.loads(opened.get(Identifier.email_hash("a")) or b"")["user_profile"] == {"try": 2}


def test_an_aborted_run_leaves_the_profiles_unchanged(store: str) -> None:
    opened = open_store(store, buckets=BUCKETS)
    staging, buckets = stage(opened, "e1", [line("a", {"x": 1})])
    opened.commit(staging, {"execution_id": "e1"}, 1, buckets, [])
    staging, _ = stage(opened, "e2", [line("b", {"x": 2})], deleted=[key("a")])
    opened.abort(staging)
    assert emails(opened) == ["a"]
    current = opened.current()
    assert current is not None and current.number == 1
