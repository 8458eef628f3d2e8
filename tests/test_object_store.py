"""The snapshot store in a bucket (s3:// and gs://), against real protocol
servers on 127.0.0.1 (tests/object_servers.py): runs, readers, the conditional
publish, the lease and kills."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profile_import.stores import open_store

from .helpers import read_cli, run_cli, upsert, without_times, write_lines
from .object_servers import new_bucket


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
    assert read_cli("get", "--store", store, "--email-hash", "b").returncode == 0
