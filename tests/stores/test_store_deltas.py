"""The folder store's delta segments: runs write what changed, readers merge,
compaction folds (stores/snapshot.py, core/segments.py)."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from profile_import.core import records
from profile_import.core.bucket import apply_to_bucket, bucket_changes
from profile_import.core.changes import Change, before_digests
from profile_import.core.fold import Command
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores import snapshot, sorted_files
from profile_import.stores.base import StoreError
from profile_import.stores.snapshot import SnapshotStore

from ..helpers import read_cli, run_cli, upsert, write_lines

NOW = "2026-01-0{}T00:00:00.000Z"
BUCKETS = 4
Run = dict[Identifier, list[Command]]


def ident(n: int) -> Identifier:
    return Identifier.email_hash(f"user{n:04d}")


def apply_run(store: SnapshotStore, name: str, run: Run, n: int, *, whole: bool) -> None:
    """One execution as the pipeline's apply step does it: per touched bucket,
    the changes (`whole=False`: read_keys, write_changes) or the whole bucket
    rewritten (`whole=True`, the reference)."""
    with store.lock():
        parent = store.current()
        staging = store.begin(name, parent)
        by_bucket: dict[int, dict[bytes, list[Command]]] = {}
        for identifier, sequence in run.items():
            bucket = bucket_of(identifier.key, store.buckets)
            by_bucket.setdefault(bucket, {})[identifier.key] = sequence
        tally: Counter[str] = Counter()
        for bucket, commands in by_bucket.items():
            if whole:
                stored = staging.source.read_bucket(bucket)
                staging.sink.write_bucket(
                    bucket, apply_to_bucket(stored, commands, NOW.format(n), tally)
                )
            else:
                touched = staging.source.read_keys(bucket, sorted(commands))
                changes: list[Change] = []
                changed, deleted = bucket_changes(touched, commands, NOW.format(n), tally, changes)
                staging.sink.write_changes(bucket, changed, deleted, before_digests(changes))
        delta = tally["created"] - tally["deleted"]
        store.commit(staging, {"execution_id": name}, delta, len(by_bucket), [name])


def random_runs(seed: int, runs: int, users: int = 60, size: int = 25) -> list[Run]:
    rnd = random.Random(seed)
    result = []
    for _ in range(runs):
        run: Run = {}
        for _ in range(size):
            who = ident(rnd.randrange(users))
            if rnd.random() < 0.25:
                command = Command("DELETE")
            else:
                command = Command("UPSERT", {"v": rnd.randrange(5)}, rnd.random() < 0.5, True)
            run.setdefault(who, []).append(command)
        result.append(run)
    return result


def everything(store: SnapshotStore) -> dict[str, Any]:
    """What every reader says of the current version."""
    version = store.current()
    assert version is not None
    keys = [ident(n).key for n in range(70)]
    after = ident(30).key
    return {
        "export": list(store.export()),
        "get": [store.get(ident(n)) for n in range(70)],
        "get_many": store.get_many(version, keys),
        "scan": list(store.scan(version)),
        "scan after": list(store.scan(version, after)),
        "scan kept": list(store.scan(version, None, lambda r: b'"v":3' in r)),
        "profiles": version.profiles,
    }


def delta_files(root: Path) -> list[Path]:
    return sorted(root.glob("data/*/*.delta.kv"))


@pytest.fixture
def no_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deltas never rewrite their bucket by size (small test buckets would)."""
    monkeypatch.setattr(snapshot, "COMPACT_FRACTION", 1e9)


@pytest.mark.usefixtures("no_size_limit")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runs_in_a_row_read_as_a_full_rewrite(tmp_path: Path, seed: int) -> None:
    deltas = SnapshotStore(str(tmp_path / "deltas"), buckets=BUCKETS)
    whole = SnapshotStore(str(tmp_path / "whole"), buckets=BUCKETS)
    for n, run in enumerate(random_runs(seed, 6), 1):
        apply_run(deltas, f"r{n}", run, n, whole=False)
        apply_run(whole, f"r{n}", run, n, whole=True)
        assert everything(deltas) == everything(whole)
        assert deltas.verify().sound, deltas.verify().problems
        assert deltas.verify().lines == whole.verify().lines
    assert delta_files(tmp_path / "deltas")  # the runs did write deltas
    # Each delta holds only what its run changed, tombstones sorted in.
    for f in delta_files(tmp_path / "deltas"):
        keys = [line.split(b"\t")[0] for line in f.read_bytes().splitlines()]
        assert keys == sorted(keys) and len(keys) <= 25


def test_a_delta_holds_only_the_changes_and_tombstones(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    forty = {ident(n): [Command("UPSERT", {"n": n}, True)] for n in range(40)}
    apply_run(store, "r1", forty, 1, whole=False)
    changes = {ident(3): [Command("DELETE")], ident(5): [Command("UPSERT", {"n": 0}, True)]}
    apply_run(store, "r2", changes, 2, whole=False)
    (delta,) = delta_files(tmp_path / "s")
    lines = delta.read_bytes().splitlines(keepends=True)
    assert [records.split(x)[0] for x in lines] == [ident(3).key, ident(5).key]
    assert lines[0] == ident(3).key + b"\t\n"  # a tombstone
    manifest = json.loads((tmp_path / "s" / "versions" / "00000002.json").read_text())
    (entry,) = manifest["shards"]
    assert entry["path"].startswith("data/r1/") and len(entry["deltas"]) == 1
    assert entry["deltas"][0]["lines"] == 2 and entry["deltas"][0]["bytes"] == delta.stat().st_size
    assert store.get(ident(3)) is None and store.current().profiles == 39  # type: ignore[union-attr]


def test_deltas_past_a_quarter_of_the_base_rewrite_the_bucket(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    base = {ident(n): [Command("UPSERT", {"n": n, "pad": "x" * 50}, True)] for n in range(100)}
    apply_run(store, "r1", base, 1, whole=False)
    base_bytes = (tmp_path / "s" / "data" / "r1" / "bucket-00000.kv").stat().st_size
    written = 0
    n = 2
    while True:
        apply_run(store, f"r{n}", {ident(n): [Command("UPSERT", {"n": -n}, True)]}, n, whole=False)
        entry = json.loads((tmp_path / "s" / "versions" / f"{n:08d}.json").read_text())["shards"][0]
        if not entry.get("deltas"):
            break
        written = sum(d["bytes"] for d in entry["deltas"])
        assert written <= snapshot.COMPACT_FRACTION * base_bytes
        assert len(entry["deltas"]) <= snapshot.MAX_DELTAS
        n += 1
    # The run that would have gone past the limit wrote a new base instead.
    assert entry["path"] == f"data/r{n}/bucket-00000.kv"
    assert n - 2 == min(snapshot.MAX_DELTAS, n - 2)
    assert store.verify().sound and store.current().profiles == 100  # type: ignore[union-attr]
    assert json.loads(store.get(ident(2)) or b"{}")["user_profile"] == {"n": -2}


@pytest.mark.usefixtures("no_size_limit")
def test_more_than_max_deltas_rewrite_the_bucket(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    apply_run(store, "r1", {ident(0): [Command("UPSERT", {}, True)]}, 1, whole=False)
    for n in range(2, snapshot.MAX_DELTAS + 3):
        apply_run(store, f"r{n}", {ident(n): [Command("UPSERT", {}, True)]}, n, whole=False)
        entry = json.loads((tmp_path / "s" / "versions" / f"{n:08d}.json").read_text())["shards"][0]
        assert len(entry.get("deltas", [])) == (n - 1) % (snapshot.MAX_DELTAS + 1)
    assert store.verify().sound and store.current().profiles == snapshot.MAX_DELTAS + 2  # type: ignore[union-attr]


@pytest.mark.usefixtures("no_size_limit")
def test_compact_rollback_and_prune(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=BUCKETS)
    runs = random_runs(7, 4)
    for n, run in enumerate(runs, 1):
        apply_run(store, f"r{n}", run, n, whole=False)
    before = everything(store)
    assert len(delta_files(tmp_path / "s")) > 0
    with store.lock():
        compacted = store.compact()
    assert compacted is not None and compacted.number == 5
    assert compacted.execution["status"] == "COMPACTED"
    assert everything(store) == {**before, "profiles": before["profiles"]}
    manifest = json.loads((tmp_path / "s" / "versions" / "00000005.json").read_text())
    assert all(entry is None or "deltas" not in entry for entry in manifest["shards"])
    assert store.verify().sound
    assert store.applied_inputs(store.current(), ["r1", "r4"]).keys() == {"r1", "r4"}
    with store.lock():
        assert store.compact() is None  # nothing left to fold
    # Rollback across the compaction: version 3, deltas and all.
    with store.lock():
        store.rollback(3)
    whole = SnapshotStore(str(tmp_path / "whole"), buckets=BUCKETS)
    for n, run in enumerate(runs[:3], 1):
        apply_run(whole, f"r{n}", run, n, whole=True)
    assert everything(store) == everything(whole)
    # Prune keeps every file the kept versions use, bases and deltas alike.
    with store.lock():
        store.prune(2)  # keeps 5 (compacted) and 6 (= version 3, with deltas)
    assert everything(store) == everything(whole) and store.verify().sound
    with store.lock():
        store.rollback(5)
    assert everything(store)["export"] == before["export"]
    assert store.verify().sound


def test_a_run_and_compact_on_a_format_2_store(tmp_path: Path) -> None:
    """Format 2 stores (no deltas) are read, and written onward as the current format."""
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    forty = {ident(n): [Command("UPSERT", {"n": n}, True)] for n in range(40)}
    apply_run(store, "r1", forty, 1, whole=True)
    meta = tmp_path / "s" / "profile-store.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 2}))
    apply_run(store, "r2", {ident(1): [Command("DELETE")]}, 2, whole=False)
    assert json.loads(meta.read_text())["format_version"] == 4
    assert len(delta_files(tmp_path / "s")) == 1 and store.verify().sound


DAMAGE = {
    "missing": (lambda f: f.unlink(), ".delta.kv is missing"),
    "edited": (lambda f: f.write_bytes(f.read_bytes().replace(b'"v"', b'"w"')), "has crc32"),
    "cut": (lambda f: f.write_bytes(f.read_bytes()[:-3]), "bytes, its version records"),
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of one bucket: a base of 200 profiles (run 1), a delta of one (run 2)."""
    folder = tmp_path_factory.mktemp("deltas")
    root = folder / "s"
    first = [upsert({"email_hash": f"user{n:04d}"}, {"v": n}) for n in range(200)]
    second = [upsert({"email_hash": "user0001"}, {"v": "x"}, force_replace=True)]
    for name, lines, extra in (("a", first, ["--buckets", "1"]), ("b", second, [])):
        path = write_lines(folder / name, lines)
        result = run_cli("run", "--store", root, *extra, "--report", folder / f"{name}.json", path)
        assert result.returncode == 0, result.stderr
    assert len(delta_files(root)) == 1
    return root


@pytest.fixture
def store_copy(two_runs: Path, tmp_path: Path) -> Path:
    shutil.copytree(two_runs, tmp_path / "s")
    return tmp_path / "s"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_delta_is_damage_for_every_reader(store_copy: Path, damage: str) -> None:
    root = store_copy
    (delta,) = delta_files(root)
    damage_file, problem = DAMAGE[damage]
    damage_file(delta)
    for args in (["export"], ["get", "--email-hash", "user0001"], ["verify"], ["compact"]):
        result = read_cli(*args, "--store", root)
        assert result.returncode == 1, (args, result.stderr)
        assert "delta.kv" in result.stdout + result.stderr, (args, result.stderr)
    said = read_cli("verify", "--store", root).stdout + read_cli("export", "--store", root).stderr
    assert problem in said


def test_a_run_on_a_damaged_delta_fails_and_publishes_nothing(store_copy: Path) -> None:
    (delta,) = delta_files(store_copy)
    DAMAGE["edited"][0](delta)
    third = [upsert({"email_hash": "user0001"}, {"v": "y"}, force_replace=True)]
    path = write_lines(store_copy.parent / "c", third)
    result = run_cli("run", "--store", store_copy, "--report", store_copy.parent / "r3", path)
    assert result.returncode == 1 and "is damaged" in result.stderr
    assert "delta.kv has crc32" in result.stderr
    assert (store_copy / "CURRENT").read_text() == "2\n"


def test_the_compact_command(store_copy: Path) -> None:
    root = store_copy
    exported = read_cli("export", "--store", root).stdout
    result = read_cli("compact", "--store", root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "profile-import: 1 bucket(s) compacted into version 3"
    assert read_cli("export", "--store", root).stdout == exported
    assert json.loads(exported.splitlines()[1])["user_profile"] == {"v": "x"}
    assert read_cli("verify", "--store", root).returncode == 0
    assert "COMPACTED" in read_cli("versions", "--store", root).stdout
    nothing = read_cli("compact", "--store", root).stderr.strip()
    assert nothing == "profile-import: nothing to compact"
    assert "compact" in read_cli("--help").stdout
    assert read_cli("rollback", "--store", root, "--to", "2").returncode == 0
    assert read_cli("export", "--store", root).stdout == exported


def test_compact_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"))
    with pytest.raises(StoreError, match="no published version"):
        store.compact()


@pytest.mark.usefixtures("no_size_limit")
@pytest.mark.parametrize("seed", [4, 5])
def test_sparse_keys_found_by_bisecting_read_as_a_full_rewrite(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few keys in a big bucket file are bisected for (`SnapshotBucketSource._find`),
    not read through: the result must be the same as a full rewrite's."""
    bisected: list[int] = []
    find_mapped = sorted_files.find_mapped

    def counting(data: Any, keys: Any) -> Any:
        bisected.append(len(keys))
        return find_mapped(data, keys)

    monkeypatch.setattr(sorted_files, "find_mapped", counting)
    deltas = SnapshotStore(str(tmp_path / "deltas"), buckets=2)
    whole = SnapshotStore(str(tmp_path / "whole"), buckets=2)
    users = 3000
    seeded = {ident(n): [Command("UPSERT", {"n": n, "pad": "x" * 150}, True)] for n in range(users)}
    for n, run in enumerate([seeded, *random_runs(seed, 4, users=users, size=12)], 1):
        apply_run(deltas, f"r{n}", run, n, whole=False)
        apply_run(whole, f"r{n}", run, n, whole=True)
        assert list(deltas.export()) == list(whole.export())
        assert deltas.verify().sound, deltas.verify().problems
    assert bisected  # the runs after the first did bisect


def test_a_bisected_file_of_the_wrong_size_is_damage(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s"), buckets=1)
    seeded = {ident(n): [Command("UPSERT", {"n": n, "pad": "x" * 150}, True)] for n in range(3000)}
    apply_run(store, "r1", seeded, 1, whole=False)
    (base,) = (tmp_path / "s").glob("data/r1/bucket-*.kv")
    base.write_bytes(base.read_bytes()[:-200])
    source = store.source(store.current())
    with pytest.raises(StoreError, match="is damaged"):
        list(source.read_keys(0, [ident(7).key]))
