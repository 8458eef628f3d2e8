from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path

import pytest

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores import ledger, open_store
from profile_import.stores.base import StoreError, StoreLocked
from profile_import.stores.snapshot import SnapshotStore

T = "2026-01-01T00:00:00.000Z"


def line(ident: Identifier, profile: dict[str, object]) -> bytes:
    return records.encode(ident.key, StoredProfile(profile, T, T))


def commit_profiles(
    store: SnapshotStore,
    run: str,
    profiles: dict[Identifier, dict[str, object]],
    created: int | None = None,
) -> int:
    """Stages one execution writing `profiles` (replacing their buckets) and commits it."""
    parent = store.current()
    staging = store.begin(run, parent)
    by_bucket: dict[int, list[bytes]] = {}
    for ident, profile in profiles.items():
        by_bucket.setdefault(bucket_of(ident.key, store.buckets), []).append(line(ident, profile))
    for bucket, lines in by_bucket.items():
        staging.sink.write_bucket(bucket, sorted(lines))
    execution = {"execution_id": run, "fingerprint": f"fp-{run}"}
    delta = len(profiles) if created is None else created
    return store.commit(staging, execution, delta, len(by_bucket), [f"fp-{run}"]).number


def ledger_of(store: SnapshotStore) -> list[str]:
    """The executions of the current version's ledger, by the fingerprints of `commit_profiles`."""
    fps = [f"fp-r{i}" for i in range(1, 10)]
    found = store.applied_inputs(store.current(), fps)
    return [found[fp].execution_id for fp in fps if fp in found]


def exported(store: SnapshotStore) -> list[dict[str, object]]:
    return [json.loads(r) for r in store.export()]


def test_a_new_store_is_empty(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"))
    assert not store.exists() and store.current() is None and list(store.export()) == []
    assert store.get(Identifier.email_hash("x")) is None


def test_commit_publishes_and_export_sorts_by_identifier(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=4)
    idents = [
        Identifier.user_agent_id("u"),
        Identifier.email_hash("e2"),
        Identifier.email_hash("e1"),
        Identifier.account("1000", "b"),
        Identifier.account("1000", "a"),
    ]
    assert commit_profiles(store, "r1", {i: {"n": n} for n, i in enumerate(idents)}) == 1
    keys = [json.loads(r) for r in store.export()]
    assert [
        (
            k.get("compartment_id"),
            k.get("user_account_id"),
            k.get("email_hash"),
            k.get("user_agent_id"),
        )
        for k in keys
    ] == [
        ("1000", "a", None, None),
        ("1000", "b", None, None),
        (None, None, "e1", None),
        (None, None, "e2", None),
        (None, None, None, "u"),
    ]
    got = store.get(Identifier.email_hash("e2"))
    assert got is not None and json.loads(got)["user_profile"] == {"n": 1}
    assert store.current().profiles == 5  # type: ignore[union-attr]


def test_untouched_buckets_are_shared_and_versions_kept(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=8)
    a, b = Identifier.email_hash("a"), Identifier.email_hash("b")
    assert bucket_of(a.key, 8) != bucket_of(b.key, 8)
    commit_profiles(store, "r1", {a: {"v": 1}, b: {"v": 1}})
    commit_profiles(store, "r2", {a: {"v": 2}})
    assert {
        json.loads(r)["email_hash"]: json.loads(r)["user_profile"]["v"] for r in store.export()
    } == {"a": 2, "b": 1}
    manifest = json.loads((tmp_path / "s" / "versions" / "00000002.json").read_text())
    shard = manifest["shards"][bucket_of(b.key, 8)]
    assert shard["path"].startswith("data/r1/") and shard["path"].endswith(".kv")
    # The manifest records what the file holds, summed while it was written.
    data = (tmp_path / "s" / shard["path"]).read_bytes()
    assert shard == {
        "path": shard["path"],
        "lines": data.count(b"\n"),
        "bytes": len(data),
        "crc32": zlib.crc32(data),
    }
    assert not list((tmp_path / "s" / "data").glob("*/*.stats"))  # in the manifest now
    assert [v.number for v in store.versions()] == [1, 2]
    assert ledger_of(store) == ["r1", "r2"]


def test_commit_refuses_when_buckets_are_missing(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=4)
    staging = store.begin("r1", None)
    staging.sink.write_bucket(1, [line(Identifier.email_hash("x"), {})])
    with pytest.raises(StoreError, match="wrote 2 buckets but 1 are in"):
        store.commit(staging, {"fingerprint": "f"}, 1, 2, ["f"])
    assert store.current() is None


def test_abort_after_publish_keeps_the_published_data(tmp_path: Path) -> None:
    """A run interrupted between its publish and its return must not break the store."""
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    staging = store.begin("r1", None)
    staging.sink.write_bucket(0, [line(Identifier.email_hash("x"), {"v": 1})])
    store.commit(staging, {"fingerprint": "f"}, 1, 1, ["f"])
    store.abort(staging)  # e.g. a SIGTERM right after the commit
    assert [json.loads(r)["user_profile"] for r in store.export()] == [{"v": 1}]


def test_a_concurrent_first_run_fixes_the_bucket_count(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    waiting = SnapshotStore(path)  # no --buckets; opened before the store existed
    asking = SnapshotStore(path, buckets=4)  # --buckets 4; opened before it existed too
    commit_profiles(SnapshotStore(path, buckets=8), "r1", {Identifier.email_hash("x"): {}})
    waiting.begin("r2", waiting.current())  # under the lock, the store is read again
    assert waiting.buckets == 8
    with pytest.raises(StoreError, match="has 8 buckets; --buckets 4"):
        asking.begin("r3", asking.current())


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    commit_profiles(store, "r1", {Identifier.email_hash("a"): {}})
    staging = store.begin("r2", store.current())
    staging.sink.write_bucket(0, [])
    store.abort(staging)
    assert not (tmp_path / "s" / "data" / "r2").exists()
    assert store.current().number == 1  # type: ignore[union-attr]


def test_a_killed_run_is_cleaned_by_the_next(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    staging = store.begin("killed", None)
    staging.sink.write_bucket(1, [line(Identifier.email_hash("x"), {})])
    # ... the process dies here: no commit, no abort.
    assert store.current() is None and list(store.export()) == []
    commit_profiles(store, "r2", {})
    assert not (tmp_path / "s" / "data" / "killed").exists()
    assert list((tmp_path / "s" / "staging").iterdir()) == []


def test_rollback_and_prune(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    x = Identifier.email_hash("x")
    for run in ("r1", "r2", "r3"):
        commit_profiles(store, run, {x: {"run": run}})
    assert store.rollback(1).number == 4
    assert json.loads(store.get(x) or b"")["user_profile"] == {"run": "r1"}
    assert ledger_of(store) == ["r1"]
    assert store.prune(keep=2) == [1, 2]
    assert [v.number for v in store.versions()] == [3, 4]
    # Version 4 still reads r1's data, so pruning version 1 kept it.
    assert json.loads(store.get(x) or b"")["user_profile"] == {"run": "r1"}
    assert not (tmp_path / "s" / "data" / "r2").exists()
    with pytest.raises(StoreError, match="no version 2"):
        store.rollback(2)


def test_a_missing_shard_is_reported_as_damage(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    commit_profiles(store, "r1", {Identifier.email_hash("x"): {}})
    (tmp_path / "s" / "data" / "r1" / "bucket-00000.kv").unlink()
    with pytest.raises(StoreError, match="damaged"):
        list(store.export())


def test_publish_refuses_a_store_that_moved(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    staging = store.begin("r1", None)
    commit_profiles(store, "other", {})
    with pytest.raises(StoreError, match="changed during the run"):
        store.commit(staging, {"fingerprint": "f"}, 0, 0, ["f"])


def test_the_lock_is_exclusive_and_says_who_holds_it(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"))
    other = SnapshotStore(str(tmp_path / "s"))
    with (
        store.lock(),
        pytest.raises(StoreLocked, match=r"in use by another run \(pid \d+"),
        other.lock(),
    ):
        pass
    with store.lock():
        pass


def test_the_lock_waits_up_to_its_timeout(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.lock():
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    threading.Timer(0.5, release.set).start()
    with SnapshotStore(str(tmp_path / "s")).lock(timeout=10):
        pass
    thread.join()


@pytest.mark.parametrize("content", ["a file", None])
def test_refuses_a_folder_that_is_not_a_store(tmp_path: Path, content: str | None) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    if content:
        (folder / "notes.txt").write_text(content)
        with pytest.raises(StoreError, match="not a profile store"):
            SnapshotStore(str(folder))
    else:
        assert SnapshotStore(str(folder)).current() is None


def test_bucket_count_is_fixed_at_creation(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=3)
    commit_profiles(store, "r1", {})
    assert SnapshotStore(str(tmp_path / "s")).buckets == 3
    with pytest.raises(StoreError, match="has 3 buckets"):
        SnapshotStore(str(tmp_path / "s"), buckets=4)


@pytest.mark.parametrize("url", ["mysql://x/y", "ftp://host/store"])
def test_unknown_store_schemes(url: str) -> None:
    with pytest.raises(StoreError, match="not supported"):
        open_store(url)


def test_the_ledger_stays_a_few_small_files_over_many_runs(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    x = Identifier.email_hash("x")
    runs = [f"r{i:03d}" for i in range(ledger.MAX_SEGMENTS * 2 + 5)]
    for run in runs:
        commit_profiles(store, run, {x: {"run": run}})
    current = store.current()
    assert current is not None
    manifest = json.loads((tmp_path / "s" / "versions" / f"{current.number:08d}.json").read_text())
    assert 1 <= len(manifest["ledger"]) <= ledger.MAX_SEGMENTS
    found = store.applied_inputs(current, [f"fp-{run}" for run in runs] + ["fp-unknown"])
    assert sorted(found) == sorted(f"fp-{run}" for run in runs)
    assert found["fp-r000"].execution_id == "r000" and found["fp-r000"].version == 1
    # Older versions keep their own (shorter) ledger; prune drops the unused segments.
    assert len(store.applied_inputs(store.versions()[0], ["fp-r000", "fp-r001"])) == 1
    store.prune(keep=1)
    on_disk = {f"ledger/{p.name}" for p in (tmp_path / "s" / "ledger").iterdir()}
    assert on_disk == {segment["path"] for segment in manifest["ledger"]}
    assert len(store.applied_inputs(store.current(), [f"fp-{run}" for run in runs])) == len(runs)


def test_a_version_left_unpublished_is_never_listed_and_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    store = SnapshotStore(str(root), buckets=2)
    x = Identifier.email_hash("x")
    commit_profiles(store, "r1", {x: {"run": 1}})
    # A run killed between its manifest and CURRENT: version 2 is written, not published.
    staging = store.begin("killed", store.current())
    staging.sink.write_bucket(bucket_of(x.key, 2), [line(x, {"run": "killed"})])
    manifest = json.loads((root / "versions" / "00000001.json").read_text())
    manifest.update(version=2, parent=1)
    manifest["shards"][bucket_of(x.key, 2)] = {"path": "data/killed/bucket-0000.kv"}
    (root / "versions" / "00000002.json").write_text(json.dumps(manifest))
    (root / "CURRENT.0123.tmp").write_text("2\n")

    assert [v.number for v in store.versions()] == [1]
    with pytest.raises(StoreError, match="no version 2"):
        store.rollback(2)
    with pytest.raises(StoreError, match="no version 2"):
        store.verify(2)
    assert json.loads(store.get(x) or b"")["user_profile"] == {"run": 1}
    assert commit_profiles(store, "r2", {x: {"run": 2}}) == 2  # the number is free again
    assert ledger_of(store) == ["r1", "r2"]
    assert sorted(p.name for p in (root / "data").iterdir()) == ["r1", "r2"]
    assert not list(root.glob("*.tmp"))


def test_a_dead_first_run_leaves_no_store_and_the_next_starts_afresh(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SnapshotStore(str(root), buckets=8)
    x = Identifier.email_hash("x")
    staging = store.begin("killed", None)
    staging.sink.write_bucket(bucket_of(x.key, 8), [line(x, {})])
    (root / "CURRENT").write_text("1\n")  # even past its pointer: the store's meta is last
    again = SnapshotStore(str(root), buckets=4)  # the bucket count was not fixed
    assert not again.exists() and again.current() is None and again.versions() == []
    commit_profiles(again, "r1", {x: {"v": 1}})
    assert again.exists() and SnapshotStore(str(root)).buckets == 4
    assert sorted(p.name for p in (root / "data").iterdir()) == ["r1"]
    assert json.loads(again.get(x) or b"")["user_profile"] == {"v": 1}


def test_a_failed_first_run_removes_what_it_created(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SnapshotStore(str(root), buckets=2)
    with store.lock():
        staging = store.begin("failed", None)
        staging.sink.write_bucket(0, [line(Identifier.email_hash("x"), {})])
        store.abort(staging)
    assert not root.exists()


def test_verify_checks_order_bucket_and_records(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=2)
    idents = [Identifier.email_hash(f"e{n}") for n in range(20)]
    home = [bucket_of(i.key, 2) for i in idents]
    zero = sorted(line(i, {}) for i, b in zip(idents, home, strict=True) if b == 0)
    one = sorted(line(i, {}) for i, b in zip(idents, home, strict=True) if b == 1)
    staging = store.begin("r1", None)
    staging.sink.write_bucket(0, [zero[1], zero[0], *zero[2:]])  # out of order
    staging.sink.write_bucket(1, [*one, b"u\x00zz\t" + zero[0].split(b"\t")[1]])
    store.commit(staging, {"fingerprint": "f"}, 20, 2, ["f"])
    result = store.verify()
    assert not result.sound and result.files == 3 and result.lines == 21  # 2 buckets, 1 ledger
    problems = "\n".join(result.problems)
    assert "bucket-00000.kv line 2: is out of key order" in problems
    assert f"bucket-00001.kv line {len(one) + 1}: has a key that is not its record's" in problems
    assert "records 20 profiles, its files hold 21" in problems


def test_a_format_1_store_is_still_read_and_upgraded_by_its_next_run(tmp_path: Path) -> None:
    root = tmp_path / "s"
    x, y = Identifier.email_hash("x"), Identifier.email_hash("d")
    assert bucket_of(x.key, 2) != bucket_of(y.key, 2)
    (root / "versions").mkdir(parents=True)
    (root / "data" / "old").mkdir(parents=True)
    shards: list[str | None] = [None, None]
    for ident in (x, y):
        name = f"data/old/bucket-{bucket_of(ident.key, 2):05d}.ndjson"
        (root / name).write_bytes(line(ident, {"old": True}))
        shards[bucket_of(ident.key, 2)] = name
    meta = {"format": "profile-import/snapshot-store", "format_version": 1, "buckets": 2}
    (root / "profile-store.json").write_text(json.dumps({**meta, "created_at": T}))
    execution = {"execution_id": "old", "fingerprint": "f"}
    applied = [{"fingerprint": "f", "execution_id": "old", "version": 1, "finished_at": T}]
    manifest = {"version": 1, "parent": None, "created_at": T, "profiles": 2}
    (root / "versions" / "00000001.json").write_text(
        json.dumps({**manifest, "execution": execution, "shards": shards, "applied": applied})
    )
    (root / "CURRENT").write_text("1\n")

    store = SnapshotStore(str(root))
    assert [json.loads(r)["user_profile"] for r in store.export()] == [{"old": True}] * 2
    assert store.verify().sound
    commit_profiles(store, "new", {x: {"new": True}}, created=0)
    assert json.loads((root / "profile-store.json").read_text())["format_version"] == 4
    assert {json.loads(r)["email_hash"]: json.loads(r)["user_profile"] for r in store.export()} == {
        "x": {"new": True},
        "d": {"old": True},
    }
    assert store.verify().sound and store.verify(1).sound


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    meta = {"format": "profile-import/snapshot-store", "format_version": 5, "buckets": 2}
    (tmp_path / "s" / "profile-store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="has format version 5; this profile-import reads"):
        SnapshotStore(str(tmp_path / "s"))


def test_a_run_waiting_for_a_failed_first_run_locks_the_store_anew(tmp_path: Path) -> None:
    """The failed first run removes its lock file; the waiting run must not keep
    a lock on that removed file while a third run locks a new one."""
    root = tmp_path / "s"
    first = SnapshotStore(str(root), buckets=2)
    held, waiting_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def fail_first_run() -> None:
        with first.lock():
            held.set()
            staging = first.begin("failed", None)
            time.sleep(0.5)  # the second run is waiting on the lock file now
            first.abort(staging)

    thread = threading.Thread(target=fail_first_run)
    thread.start()
    held.wait(5)
    second = SnapshotStore(str(root), buckets=2)

    def run_second() -> None:
        try:
            with second.lock(timeout=10):
                with pytest.raises(StoreLocked):  # it holds the lock at the path
                    SnapshotStore(str(root)).lock().__enter__()
                waiting_done.set()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    waiter = threading.Thread(target=run_second)
    waiter.start()
    thread.join()
    waiter.join()
    assert not errors and waiting_done.is_set()
