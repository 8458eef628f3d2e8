"""A run's outputs tell the truth: checked before the run, written through one
layer, `-` for the standard streams, and never a failed exit for a published run."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from profile_import.stores import locking

from ..helpers import (
    CLI,
    ONE_WORKER,
    export,
    message_lines,
    read_ndjson,
    run_cli,
    upsert,
    write_lines,
)

pytestmark = pytest.mark.spec(section=4)

GOOD = upsert({"email_hash": "good"}, {"v": 1})


def test_an_unwritable_report_is_refused_before_the_run(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.ndjson", [GOOD])
    # A folder no one may create files in, not even root.
    result = run_cli("run", "--store", tmp_path / "s", "--report", "/sys/report.json", src)
    assert result.returncode == 2
    assert message_lines(result.stderr) == [
        "profile-import: error: --report /sys/report.json: cannot write: Permission denied"
    ]
    assert json.loads(result.stdout)["status"] == "FAILED"  # the report of what did not run
    assert not (tmp_path / "s" / "CURRENT").exists()


def test_a_report_that_fails_after_the_publish_does_not_fail_the_run(tmp_path: Path) -> None:
    store = tmp_path / "s"
    seed = write_lines(tmp_path / "seed.ndjson", [GOOD])
    assert run_cli("run", "--store", store, seed).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    report = out / "report.json"
    src = write_lines(tmp_path / "a.ndjson", [upsert({"email_hash": "late"}, {"v": 2})])
    argv = [*CLI, "run", "--store", str(store), "--report", str(report), "--lock-timeout", "60"]
    # Held by the test, the store keeps the run waiting after its outputs were
    # checked (and left as they were); the report's folder then disappears.
    with locking.exclusive(str(store / ".lock"), 0, "store"):
        process = subprocess.Popen(
            [*argv, *ONE_WORKER, str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        for line in process.stderr:
            if b"waiting for the store lock: started" in line:
                break
        assert list(out.iterdir()) == []  # proven writable without writing there
        shutil.rmtree(out)
    stdout, rest = process.communicate(timeout=120)
    assert process.returncode == 0, rest
    assert b"warning: cannot write the report to" in rest
    published = json.loads(stdout)
    assert published["status"] == "SUCCEEDED" and published["version"] == 2
    assert {p["email_hash"] for p in export(store)} == {"good", "late"}


def test_rejects_on_standard_output(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.ndjson", [GOOD, "{oops"])
    report = tmp_path / "report.json"
    result = run_cli("run", "--store", tmp_path / "s", "--rejects", "-", "--report", report, src)
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["line"], r["code"]) for r in rejects] == [(2, "INVALID_JSON")]
    assert json.loads(report.read_text())["rejects_file"] == "standard output"


def test_rejects_and_report_cannot_both_take_standard_output(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.ndjson", [GOOD])
    result = run_cli("run", "--store", tmp_path / "s", "--rejects", "-", src)
    assert result.returncode == 2
    assert "--rejects -: standard output already carries the report" in result.stderr


def test_standard_input_is_an_input(tmp_path: Path) -> None:
    store = tmp_path / "s"
    data = (json.dumps(GOOD) + "\n{oops\n").encode()
    argv = [*CLI, "run", "--store", str(store), "--rejects", str(tmp_path / "r.ndjson")]
    result = subprocess.run(
        [*argv, *ONE_WORKER, "-"], input=data, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["inputs"][0]["path"] == "-" and report["inputs"][0]["lines"] == 2
    assert [(r["file"], r["line"]) for r in read_ndjson(tmp_path / "r.ndjson")] == [("-", 2)]
    # The same content from a file is the same input.
    same = tmp_path / "same.ndjson"
    same.write_bytes(data)
    again = run_cli("run", "--store", store, "--rejects", tmp_path / "r2", same)
    assert json.loads(again.stdout)["status"] == "ALREADY_APPLIED"


def test_a_failed_run_says_what_it_read_and_that_nothing_changed(tmp_path: Path) -> None:
    store = tmp_path / "s"
    seed = write_lines(tmp_path / "seed.ndjson", [GOOD])
    assert run_cli("run", "--store", store, seed).returncode == 0
    before = export(store)
    lines = [upsert({"email_hash": f"u{i}"}, {}) for i in range(5)] + ["{oops", ""]
    src = write_lines(tmp_path / "a.ndjson", lines)
    rejects = tmp_path / "r.ndjson"
    result = run_cli("run", "--store", store, "--max-rejects", "0", "--rejects", rejects, src)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "FAILED"
    counts = report["counts"]
    assert (counts["lines"], counts["accepted"], counts["rejected"], counts["blank"]) == (
        7,
        5,
        1,
        1,
    )
    assert counts["profiles_created"] == 0 and counts["upserts"] == 5
    [message] = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert "exceed --max-rejects 0" in message and "nothing was published" in message
    assert "created" not in message
    assert export(store) == before


def test_xz_inputs_are_read_and_zip_archives_refused(tmp_path: Path) -> None:
    xz = tmp_path / "a.ndjson.xz"
    xz.write_bytes(lzma.compress((json.dumps(GOOD) + "\n").encode()))
    result = run_cli("run", "--store", tmp_path / "s", xz)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["accepted"] == 1
    zipped = tmp_path / "b.ndjson.zip"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    refused = run_cli("run", "--store", tmp_path / "s", zipped)
    assert refused.returncode == 2
    assert (
        f"input {zipped}: zip files are not read; decompress it, or use one of "
        ".bz2, .gz, .lz4, .xz, .zst" in refused.stderr.splitlines()[-1]
    )
