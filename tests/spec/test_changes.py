"""The change feed (SPEC §6): `run --changes`, `changes --since`, and how
retention, rollback and re-runs bear on them, through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from profile_import.core.changes import (
    CREATED,
    DELETED,
    UPDATED,
    ChangeRecord,
    change_line,
    fold_records,
    net_changes,
    state_digest,
)
from profile_import.core.idempotency import InputDecision
from profile_import.core.identifiers import Identifier
from profile_import.inputs.content import ContentHash
from profile_import.inputs.plan import InputFile
from profile_import.stores.folders import open_files
from profile_import.transforms.steps.decisions import Decided
from profile_import.transforms.steps.finalize import Finalizer, RunContext

from ..helpers import run_cli
from ..object_servers import new_bucket, put

pytestmark = pytest.mark.spec(section=6)

E1 = Identifier.email_hash("e1").key
E2 = Identifier.email_hash("e2").key


def record(name: str, profile: dict[str, Any], created: str = "t0", modified: str = "t0") -> bytes:
    body = {"email_hash": name, "user_profile": profile}
    return json.dumps({**body, "created_at": created, "last_modified_at": modified}).encode()


# --- core.changes -----------------------------------------------------------


def test_a_state_is_its_profile_and_creation_not_its_last_write_nor_key_order() -> None:
    a = record("e1", {"a": 1, "b": [1, {"x": 2, "y": 3}]}, modified="t0")
    b = record("e1", {"b": [1, {"y": 3, "x": 2}], "a": 1}, modified="t9")
    assert state_digest(a) == state_digest(b)
    assert state_digest(a) != state_digest(record("e1", {"a": 1, "b": [1]}))
    assert state_digest(a) != state_digest(record("e1", {"a": 1, "b": [1, {"x": 2, "y": 3}]}, "t1"))


def test_net_changes_compare_the_state_at_the_version_with_now() -> None:
    old = record("e2", {"v": 1})
    found = fold_records(
        [
            ChangeRecord(2, E1, None),  # created in 2
            ChangeRecord(3, E1, state_digest(record("e1", {"v": 5}))),  # updated in 3
            ChangeRecord(2, E2, state_digest(old)),  # changed in 2, back in 4
            ChangeRecord(4, E2, state_digest(record("e2", {"v": 2}))),
        ]
    )
    now = {E1: record("e1", {"v": 6}), E2: record("e2", {"v": 1}, modified="t4")}
    assert list(net_changes(found, now)) == [(CREATED, 3, E1, now[E1])]
    assert list(net_changes(found, {})) == [(DELETED, 4, E2, None)]


def test_a_change_line_is_the_export_record_with_the_change_in_front() -> None:
    line = change_line(UPDATED, 7, E1, record("e1", {"a": 1}))
    assert list(json.loads(line)) == [
        "change",
        "version",
        "email_hash",
        "user_profile",
        "created_at",
        "last_modified_at",
    ]
    assert json.loads(change_line(DELETED, None, E1, None)) == {
        "change": "deleted",
        "version": None,
        "email_hash": "e1",
    }


# --- the command line -------------------------------------------------------


def upsert(name: str, profile: dict[str, Any]) -> str:
    return json.dumps(
        {"operation": "UPSERT", "email_hash": name, "force_replace": True, "user_profile": profile}
    )


def delete(name: str) -> str:
    return json.dumps({"operation": "DELETE", "email_hash": name})


def import_lines(tmp: Path, store: str, name: str, *lines: str, args: tuple[str, ...] = ()) -> Any:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    report = tmp / f"{name}.report.json"
    result = run_cli("run", "--store", store, "--report", report, *args, path)
    assert result.returncode == 0, result.stderr
    return json.loads(report.read_text())


def changes_since(store: str, since: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = run_cli("changes", "--store", store, "--since", str(since))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stderr.strip().splitlines()[-1])
    return [json.loads(line) for line in result.stdout.splitlines()], info


def kinds(changes: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [(c["change"], c["email_hash"], c["version"]) for c in changes]


STORES = {
    "folder": lambda tmp: str(tmp / "store"),
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'p.db'}",
}


@pytest.mark.parametrize("kind", sorted(STORES))
def test_the_report_names_the_changes_and_a_retry_leaves_them(tmp_path: Path, kind: str) -> None:
    store = STORES[kind](tmp_path)
    out = tmp_path / "changes.ndjson"
    lines = (upsert("e1", {"a": 1}), upsert("e2", {"b": 1}))
    report = import_lines(tmp_path, store, "a.ndjson", *lines, args=("--changes", str(out)))
    assert (report["changes_file"], report["changes_version"]) == (str(out), 1)
    written = out.read_bytes()
    assert kinds([json.loads(x) for x in written.splitlines()]) == [
        ("created", "e1", 1),
        ("created", "e2", 1),
    ]
    # The same input again applies nothing: the changes of the run that did stay.
    again = import_lines(tmp_path, store, "a.ndjson", *lines, args=("--changes", str(out)))
    assert again["status"] == "ALREADY_APPLIED" and "changes_file" not in again
    assert out.read_bytes() == written
    # Nothing but the changes file itself is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("kind", sorted(STORES))
def test_since_a_version_not_published_or_pruned_is_refused(tmp_path: Path, kind: str) -> None:
    store = STORES[kind](tmp_path)
    for n in range(1, 4):
        import_lines(tmp_path, store, f"{n}.ndjson", upsert(f"e{n}", {"n": n}))
    assert kinds(changes_since(store, 1)[0]) == [("created", "e2", 2), ("created", "e3", 3)]
    ahead = run_cli("changes", "--store", store, "--since", "4")
    assert ahead.returncode == 1 and ahead.stdout == ""
    assert "version 4 is not published yet (the store is at version 3)" in ahead.stderr
    assert run_cli("prune", "--store", store, "--keep", "2").returncode == 0
    pruned = run_cli("changes", "--store", store, "--since", "0")
    assert pruned.returncode == 1 and pruned.stdout == ""
    assert "the oldest --since this store answers is 1" in pruned.stderr
    assert len(pruned.stderr.strip().splitlines()) == 1
    assert kinds(changes_since(store, 1)[0]) == [("created", "e2", 2), ("created", "e3", 3)]
    bad = run_cli("changes", "--store", store, "--since", "-1")
    assert bad.returncode == 2


def test_a_rollback_is_changes_a_consumer_receives(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    import_lines(tmp_path, store, "1.ndjson", upsert("e1", {"v": 1}), upsert("e2", {"v": 1}))
    import_lines(tmp_path, store, "2.ndjson", upsert("e1", {"v": 2}), delete("e2"))
    import_lines(tmp_path, store, "3.ndjson", upsert("e3", {"v": 3}))
    assert run_cli("rollback", "--store", store, "--to", "1").returncode == 0  # version 4
    # A consumer at 3 gets what the rollback changed back; one at 2 too, net.
    assert kinds(changes_since(store, 3)[0]) == [
        ("updated", "e1", 4),
        ("created", "e2", 4),
        ("deleted", "e3", 4),
    ]
    assert kinds(changes_since(store, 2)[0]) == [("updated", "e1", 4), ("created", "e2", 4)]
    # One at 1 sees no change: the rollback restored version 1.
    changes, info = changes_since(store, 1)
    assert changes == [] and info["version"] == 4


def test_changes_go_to_parquet_and_a_dry_run_previews_them(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    import_lines(tmp_path, store, "1.ndjson", upsert("e1", {"v": 1}), upsert("e2", {"v": 1}))
    preview = tmp_path / "preview.ndjson"
    report = import_lines(
        tmp_path,
        store,
        "2.ndjson",
        delete("e1"),
        upsert("e3", {"v": 3}),
        args=("--dry-run", "--changes", str(preview)),
    )
    assert report["changes_version"] is None
    assert kinds([json.loads(x) for x in preview.read_text().splitlines()]) == [
        ("deleted", "e1", None),
        ("created", "e3", None),
    ]
    out = tmp_path / "c.parquet"
    result = run_cli(
        "changes", "--store", store, "--since", "0", "--format", "parquet", "--output", out
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out).to_pylist()
    assert [(r["change"], r["version"], r["email_hash"]) for r in table] == [
        ("created", 1, "e1"),
        ("created", 1, "e2"),
    ]


def test_changes_to_standard_output_need_the_report_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_text(upsert("e1", {}) + "\n")
    store = str(tmp_path / "store")
    refused = run_cli("run", "--store", store, "--changes", "-", path)
    assert refused.returncode == 2 and "--changes -" in refused.stderr
    report = tmp_path / "r.json"
    done = run_cli("run", "--store", store, "--changes", "-", "--report", report, path)
    assert done.returncode == 0, done.stderr
    assert kinds([json.loads(x) for x in done.stdout.splitlines()]) == [("created", "e1", 1)]
    no_folder = run_cli("run", "--store", store, "--changes", tmp_path / "no" / "c", path)
    assert no_folder.returncode == 2 and "no folder" in no_folder.stderr


# --- what the folder store keeps of them --------------------------------------


def change_segments(store: Path) -> list[Path]:
    """In the order the runs wrote them (one after another): their folders'
    names order runs only to the second."""
    return sorted(store.glob("data/*/*.changes"), key=lambda p: (p.stat().st_mtime_ns, p))


def test_verify_checks_the_change_segments_as_the_manifest_records_them(tmp_path: Path) -> None:
    store = tmp_path / "store"
    lines = [upsert(f"e{n}", {"n": n}) for n in range(6)]
    import_lines(tmp_path, str(store), "1.ndjson", *lines, args=("--buckets", "2"))
    assert run_cli("verify", "--store", store).returncode == 0
    first, second = change_segments(store)
    first.write_bytes(first.read_bytes().replace(b"\t", b"\tff", 1))  # a digest, bad
    second.unlink()
    result = run_cli("verify", "--store", store)
    assert result.returncode == 1
    assert f"{second.relative_to(store)} is missing" in result.stdout + result.stderr
    assert "line 1: holds no state digest after its key" in result.stdout + result.stderr
    assert "its version records" in result.stdout + result.stderr  # the bytes differ


def test_prune_removes_the_change_segments_of_versions_it_drops(tmp_path: Path) -> None:
    """Bucket files of a pruned version's run may stay, a kept version reading
    them as deltas; its change segments go with its manifest."""
    store = tmp_path / "store"
    base = [upsert(f"e{n}", {"n": n, "pad": "x" * 50}) for n in range(40)]
    import_lines(tmp_path, str(store), "1.ndjson", *base, args=("--buckets", "1"))
    import_lines(tmp_path, str(store), "2.ndjson", upsert("e1", {"n": -1}))
    import_lines(tmp_path, str(store), "3.ndjson", upsert("e2", {"n": -2}))
    run1, run2, run3 = change_segments(store)
    manifest = json.loads((store / "versions" / "00000003.json").read_text())
    assert len(manifest["shards"][0]["deltas"]) == 2  # runs 2 and 3 as deltas over run 1
    assert run_cli("prune", "--store", store, "--keep", "1").returncode == 0
    assert change_segments(store) == [run3]
    assert run1.parent.exists() and run2.parent.exists()  # version 3 reads their files
    assert run_cli("verify", "--store", store).returncode == 0
    assert kinds(changes_since(str(store), 2)[0]) == [("updated", "e2", 3)]


def test_a_failed_run_removes_its_change_files_from_a_bucket(object_scheme: str) -> None:
    """With workers elsewhere the apply step leaves the run's change files in
    a bucket (`<work>-changes`); a run that fails removes them too."""
    root = f"{object_scheme}://{new_bucket(object_scheme)}"
    changes_dir = f"{root}/tmp/e1-changes"
    put(f"{changes_dir}/changes-00000.tsv", b"k\tcreated\t{}\n")
    put(f"{root}/tmp/e2-changes/changes-00000.tsv", b"k\tcreated\t{}\n")  # another run's
    ctx = RunContext(
        "e1",
        "2026-11-23T00:00:00.000Z",
        "2026-11-23T00:00:00.000Z",
        "DataflowRunner",
        None,
        f"{root}/store",
        False,
        (InputFile(0, f"{root}/in/a.ndjson", 10, None),),
        changes_location=f"{root}/changes.ndjson",
        changes_dir=changes_dir,
    )
    # Two lines in the input, one read: counts that do not add up fail the run.
    decided = Decided((ContentHash(0, "0" * 64, 10, 2),), (InputDecision(0, "f" * 64),))
    report = Finalizer(ctx, None, None, None).finalize(decided, {0: {"lines": 1}}, {}, [])
    assert report["status"] == "FAILED" and "1 lines read of 2" in report["failure"]
    files = open_files(f"{root}/tmp")
    assert not files.exists("e1-changes/changes-00000.tsv")
    assert files.exists("e2-changes/changes-00000.tsv")
    assert not open_files(root).exists("changes.ndjson")
