"""The snapshot store in a bucket (s3:// and gs://), against real protocol
servers on 127.0.0.1 (tests/object_servers.py): runs, readers, the conditional
publish, the lease and kills."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from profile_import.stores import failpoints, lease, open_store
from profile_import.stores.folders import open_files

from ..helpers import (
    CLI,
    ONE_WORKER,
    read_cli,
    run_cli,
    run_killed_at,
    store_state,
    upsert,
    without_times,
    write_lines,
)
from ..object_servers import new_bucket


def export_url(store: str) -> list[dict[str, object]]:
    result = read_cli("export", "--store", store)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_runs_publish_versions_a_reader_sees_whole(object_scheme: str, tmp_path: Path) -> None:
    store = f"{object_scheme}://{new_bucket(object_scheme)}/stores/main"
    first = write_lines(tmp_path / "1.ndjson", [upsert({"email_hash": "a"}, {"n": 1}), "bad"])
    second = write_lines(tmp_path / "2.ndjson", [upsert({"email_hash": "b"}, {"n": 2})])
    report = tmp_path / "report.json"
    result = run_cli("run", "--store", store, "--report", report, "--buckets", "4", first)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["status"] == "SUCCEEDED_WITH_ERRORS"
    result = run_cli("run", "--store", store, second)
    assert result.returncode == 0, result.stderr
    assert without_times(export_url(store)) == [
        {"email_hash": "a", "user_profile": {"n": 1}},
        {"email_hash": "b", "user_profile": {"n": 2}},
    ]
    again = run_cli("run", "--store", store, "--report", report, second)
    assert again.returncode == 0, again.stderr
    assert json.loads(report.read_text())["status"] == "ALREADY_APPLIED"
    opened = open_store(store)
    assert [v.number for v in opened.versions()] == [1, 2]
    assert opened.verify().sound
    got = read_cli("get", "--store", store, "--email-hash", "b")
    assert json.loads(got.stdout)["user_profile"] == {"n": 2}
    # Paging by a cursor and reading by identifiers: seeks and range reads.
    page = read_cli("list", "--store", store, "--limit", "1")
    assert page.returncode == 0, page.stderr
    assert [json.loads(x)["email_hash"] for x in page.stdout.splitlines()] == ["a"]
    cursor = json.loads(page.stderr.splitlines()[-1])["next_cursor"]
    rest = read_cli("list", "--store", store, "--cursor", cursor)
    assert [json.loads(x)["email_hash"] for x in rest.stdout.splitlines()] == ["b"]
    ids = tmp_path / "ids.ndjson"
    ids.write_text('{"email_hash": "b"}\n{"email_hash": "zz"}\n{"email_hash": "a"}\n')
    by_ids = read_cli("get", "--store", store, "--ids", ids)
    assert by_ids.returncode == 0, by_ids.stderr
    assert sorted(json.loads(x)["email_hash"] for x in by_ids.stdout.splitlines()) == ["a", "b"]


def test_the_pointer_is_replaced_only_over_the_version_read(object_scheme: str) -> None:
    from profile_import.stores.files import PointerMoved
    from profile_import.stores.folders import open_files

    files = open_files(f"{object_scheme}://{new_bucket(object_scheme)}/s")
    other = open_files(files.url)
    files.write_pointer("CURRENT", b"1\n", None, lambda: None)
    with pytest.raises(PointerMoved):  # a second first publish
        other.write_pointer("CURRENT", b"1\n", None, lambda: None)
    _, seen = files.read_pointer("CURRENT")
    _, seen_too = other.read_pointer("CURRENT")
    other.write_pointer("CURRENT", b"2\n", seen_too, lambda: None)
    with pytest.raises(PointerMoved):  # both started from version 1: one publishes
        files.write_pointer("CURRENT", b"2\n", seen, lambda: None)
    assert files.read_bytes("CURRENT") == b"2\n"


def test_a_lease_is_exclusive_renewed_released_and_fenced(
    object_scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profile_import.stores.base import StoreError, StoreLocked
    from profile_import.stores.folders import open_files
    from profile_import.stores.lease import ENV

    monkeypatch.setenv(ENV, "0.6")
    url = f"{object_scheme}://{new_bucket(object_scheme)}/s"
    holder, other = open_files(url), open_files(url)
    with holder.lock(0, "store s"):
        with pytest.raises(StoreLocked, match="in use by another run"), other.lock(0, "s"):
            pass
        time.sleep(1.5)  # past the lease's duration: renewed meanwhile
        holder.fence()
        with pytest.raises(StoreLocked), other.lock(0, "store s"):
            pass
    with other.lock(0, "store s"):  # released
        other.fence()
        # Taken over (as after an expiry): the first holder may not publish.
        thief = open_files(url)
        lease_key = "s/.lock"
        bucket = thief.bucket  # type: ignore[attr-defined]
        data, _ = bucket.get(lease_key)
        bucket.put(lease_key, data.replace(b'"owner": "', b'"owner": "x'))
        with pytest.raises(StoreError, match="taken over"):
            other.fence()


KILL_POINTS = [failpoints.BUCKET_WRITTEN, *failpoints.POINTS]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_while_writing_or_publishing_leaves_before_or_after(
    object_scheme: str, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short lease, so the rerun takes over the one the killed run left.
    monkeypatch.setenv(lease.ENV, "2")
    store = f"{object_scheme}://{new_bucket(object_scheme)}/store"
    seed = write_lines(tmp_path / "seed.ndjson", [upsert({"email_hash": "seed"}, {"v": 1})])
    assert run_cli("run", "--store", store, "--buckets", "4", seed).returncode == 0
    before = store_state(store)
    more = write_lines(
        tmp_path / "more.ndjson", [upsert({"email_hash": f"m{i}"}, {"i": i}) for i in range(20)]
    )
    run_killed_at(point, store, more)
    seen = store_state(store)
    rerun = run_cli("run", "--store", store, "--lock-timeout", "30", more)
    assert rerun.returncode == 0, rerun.stderr
    after = store_state(store)
    if point == failpoints.AFTER_POINTER:
        assert seen == after  # published: the rerun finds its input applied
        assert "ALREADY_APPLIED" in rerun.stderr + rerun.stdout
    else:
        assert seen == before
        assert after[1] == ["1", "2"] and len(after[0]) == 21
    # What the killed run left is gone, but what the versions use.
    files = open_files(store)
    assert files.listdir("staging") == []
    assert files.listdir("versions") == [f"{n:08d}.json" for n in range(1, len(after[1]) + 1)]


@pytest.mark.slow
def test_two_runs_at_once_one_publishes_the_other_waits_or_fails(
    object_scheme: str, tmp_path: Path
) -> None:
    store = f"{object_scheme}://{new_bucket(object_scheme)}/store"
    seed = write_lines(tmp_path / "seed.ndjson", [upsert({"email_hash": "seed"}, {"v": 1})])
    assert run_cli("run", "--store", store, seed).returncode == 0
    files = open_files(store)
    with files.lock(0, f"store {store}"):  # a run in progress holds the store
        second = write_lines(tmp_path / "2.ndjson", [upsert({"email_hash": "two"}, {"n": 2})])
        refused = run_cli("run", "--store", store, second)
        assert refused.returncode == 1
        assert "is in use by another run (pid" in refused.stderr
        assert "--lock-timeout" in refused.stderr
        waiting = subprocess.Popen(
            [
                *CLI,
                "run",
                "--quiet",
                "--store",
                store,
                "--lock-timeout",
                "60",
                *ONE_WORKER,
                str(second),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert waiting.poll() is None  # waits for the lease
    assert waiting.wait(timeout=120) == 0
    assert {p["email_hash"] for p in export_url(store)} == {"seed", "two"}


def test_a_run_whose_lease_was_taken_over_publishes_nothing(object_scheme: str) -> None:
    from profile_import.core.identifiers import Identifier
    from profile_import.stores.base import StoreError
    from profile_import.stores.snapshot import SnapshotStore

    from .test_snapshot_store import commit_profiles

    url = f"{object_scheme}://{new_bucket(object_scheme)}/s"
    store = SnapshotStore(url, buckets=2)
    with store.lock():
        commit_profiles(store, "r1", {Identifier.email_hash("a"): {"n": 1}})
    with store.lock():
        # Another run takes the lease over (as after this one's had ended).
        bucket = store.files.bucket  # type: ignore[attr-defined]
        data, _ = bucket.get("s/.lock")
        bucket.put("s/.lock", data.replace(b'"owner": "', b'"owner": "other-'))
        with pytest.raises(StoreError, match=r"lease was taken over.*nothing was published"):
            commit_profiles(store, "r2", {Identifier.email_hash("b"): {"n": 2}})
    reopened = SnapshotStore(url)
    assert [v.number for v in reopened.versions()] == [1]
    assert len(list(reopened.export())) == 1
    assert reopened.files.listdir("versions") == ["00000001.json"]  # its manifest withdrawn
