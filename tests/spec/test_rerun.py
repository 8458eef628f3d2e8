"""Idempotency per input (SPEC §4), through the command line on real files."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from backports import zstd

from ..helpers import export, run_cli, upsert, without_times, write_lines

pytestmark = pytest.mark.spec(section=4)


def run_json(*args: str | Path) -> dict[str, Any]:
    result = run_cli("run", *args)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def tags(store: Path) -> dict[str, list[str]]:
    return {p["email_hash"]: p["user_profile"]["tags"] for p in export(store)}


def merge_file(path: Path, user: str, tag: str) -> Path:
    return write_lines(path, [upsert({"email_hash": user}, {"tags": [tag]}, merge_objects=True)])


def test_a_late_file_beside_applied_ones_is_the_only_one_applied(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = merge_file(tmp_path / "a.ndjson", "u", "a")
    first = run_json("--store", store, a)
    b = merge_file(tmp_path / "b.ndjson", "u", "b")
    again = run_json("--store", store, a, b)  # the nightly glob, after b arrived late
    assert again["status"] == "SUCCEEDED"
    assert tags(store) == {"u": ["a", "b"]}  # a's deep merge is not doubled
    assert again["counts"]["lines"] == 1  # a's lines are neither applied nor counted
    skipped, applied = again["inputs"]
    assert (skipped["applied"], skipped["skipped"]) == (False, "already_applied")
    assert skipped["applied_by"]["execution_id"] == first["execution_id"]
    assert skipped["applied_by"]["version"] == first["version"]
    assert applied["applied"] is True and "skipped" not in applied
    assert f"skipped 1 input(s) applied before: {a}" in again["message"]
    # Both again: every input applied before, nothing changes.
    third = run_json("--store", store, b, a)
    assert third["status"] == "ALREADY_APPLIED" and third["version"] == again["version"]
    assert [x["execution_id"] for x in third["already_applied"]] == [
        again["execution_id"],
        first["execution_id"],
    ]
    assert tags(store) == {"u": ["a", "b"]}


def test_the_same_content_compressed_otherwise_is_the_same_input(tmp_path: Path) -> None:
    store = tmp_path / "store"
    plain = merge_file(tmp_path / "a.ndjson", "u", "a")
    run_json("--store", store, plain)
    data = plain.read_bytes()
    gz1 = tmp_path / "a1.ndjson.gz"
    gz1.write_bytes(gzip.compress(data, mtime=1))
    gz2 = tmp_path / "a2.ndjson.gz"
    gz2.write_bytes(gzip.compress(data, mtime=2))  # another header time: other bytes
    zst = tmp_path / "a.ndjson.zst"
    zst.write_bytes(zstd.compress(data))
    assert gz1.read_bytes() != gz2.read_bytes()
    for path in (gz1, gz2, zst):
        report = run_json("--store", store, path)
        assert report["status"] == "ALREADY_APPLIED", path
    assert tags(store) == {"u": ["a"]}


def test_a_content_given_twice_in_one_run_is_applied_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = merge_file(tmp_path / "a.ndjson", "u", "a")
    copy = tmp_path / "copy.ndjson"
    shutil.copy(a, copy)
    report = run_json("--store", store, a, copy)
    assert tags(store) == {"u": ["a"]}
    assert report["counts"]["accepted"] == 1
    assert report["inputs"][1]["skipped"] == "duplicate"
    assert report["inputs"][1]["duplicate_of"] == str(a)
    # --allow-reapply applies every input as given.
    run_json("--store", store, "--allow-reapply", a, copy)
    assert tags(store) == {"u": ["a", "a", "a"]}


def test_options_that_change_meaning_make_another_input(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = write_lines(tmp_path / "a.ndjson", [{"operation": "DELETE", "user_account_id": "x"}])
    first = run_json("--store", store, "--default-compartment-id", "1", src)
    assert first["counts"]["deletes"] == 1
    other = run_json("--store", store, "--default-compartment-id", "2", src)
    assert other["status"] == "SUCCEEDED"
    same = run_json("--store", store, "--default-compartment-id", "1", src)
    assert same["status"] == "ALREADY_APPLIED"


def test_a_rollback_forgets_the_inputs_it_rolls_back(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = merge_file(tmp_path / "a.ndjson", "u", "a")
    b = merge_file(tmp_path / "b.ndjson", "u", "b")
    run_json("--store", store, a)
    run_json("--store", store, b)
    assert run_cli("rollback", "--store", store, "--to", "1").returncode == 0
    assert tags(store) == {"u": ["a"]}
    report = run_json("--store", store, a, b)
    assert [i["applied"] for i in report["inputs"]] == [False, True]
    assert without_times(export(store)) == [
        {"email_hash": "u", "user_profile": {"tags": ["a", "b"]}}
    ]
