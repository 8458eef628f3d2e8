"""End-to-end: the `profile-import` command on real files in a temporary folder."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..helpers import (
    LOCAL,
    delete,
    export,
    read_ndjson,
    run_cli,
    upsert,
    without_times,
    write_big_input,
    write_lines,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "commands.ndjson"
ALICE = {"compartment_id": "1000", "user_account_id": "alice"}
BOB = {"email_hash": "5d41402abc4b2a76b9719d911017c592"}
ID_FIELDS = ("compartment_id", "user_account_id", "email_hash", "user_agent_id")


def run_ok(*args: str | Path) -> dict[str, Any]:
    result = run_cli("run", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--report" not in args else {}


def test_example_file_end_to_end(tmp_path: Path) -> None:
    store, rejects, report = (
        tmp_path / "store",
        tmp_path / "rejects.ndjson",
        tmp_path / "report.json",
    )
    result = run_cli("run", "--store", store, "--rejects", rejects, "--report", report, EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # The phases' log lines (tests/product/test_usage.py), then the summary.
    assert result.stderr.splitlines()[-2:] == [
        "profile-import: SUCCEEDED_WITH_ERRORS: 9 lines, 6 accepted, 2 rejected, 1 blank; "
        "profiles 2 created, 0 updated, 0 unchanged, 0 deleted; published as store version 1",
        f"profile-import: rejects in {rejects}",
    ]

    rep = json.loads(report.read_text())
    assert rep["status"] == "SUCCEEDED_WITH_ERRORS" and rep["errors"] is True
    assert rep["counts"] == {
        "lines": 9,
        "blank": 1,
        "accepted": 6,
        "rejected": 2,
        "upserts": 5,
        "deletes": 1,
        "profiles_created": 2,
        "profiles_updated": 0,
        "profiles_unchanged": 0,
        "profiles_deleted": 0,
        "deletes_missing": 0,
    }
    assert rep["rejects_by_code"] == {"INVALID_JSON": 1, "INVALID_FIELD": 1}
    assert rep["inputs"] == [
        {
            "path": str(EXAMPLE),
            "sha256": hashlib.sha256(EXAMPLE.read_bytes()).hexdigest(),
            "bytes": EXAMPLE.stat().st_size,
            "lines": 9,
            "compression": None,
            "fingerprint": rep["inputs"][0]["fingerprint"],
            "applied": True,
        }
    ]
    assert re.fullmatch("[0-9a-f]{64}", rep["inputs"][0]["fingerprint"])
    assert rep["data"] == [
        f"{EXAMPLE}:8: INVALID_FIELD force_replace must be a boolean, not string",
        f"{EXAMPLE}:9: INVALID_JSON not valid JSON: "
        "unexpected end of data: line 1 column 131 (char 130)",
    ]
    # A small import: run in this process (the README's main job).
    assert rep["runner"] == "InProcess" and rep["version"] == 1 and rep["execution_id"]
    assert rep["started_at"].endswith("Z") and rep["finished_at"] >= rep["started_at"]

    lines = EXAMPLE.read_text().splitlines()
    assert read_ndjson(rejects) == [
        {
            "file": str(EXAMPLE),
            "line": 8,
            "code": "INVALID_FIELD",
            "message": "force_replace must be a boolean, not string",
            "raw": lines[7],
        },
        {
            "file": str(EXAMPLE),
            "line": 9,
            "code": "INVALID_JSON",
            "message": "not valid JSON: unexpected end of data: line 1 column 131 (char 130)",
            "raw": lines[8],
        },
    ]

    profiles = export(store)
    assert without_times(profiles) == [
        {
            **ALICE,
            "user_profile": {
                "first_name": "Alice",
                "interests": ["Drama", "Sci-Fi"],
                "address": {"city": "Paris", "zip": "75001"},
            },
        },
        {**BOB, "user_profile": {"first_name": "Bob", "opt_in": True}},
    ]
    assert all(p["created_at"] == rep["started_at"] == p["last_modified_at"] for p in profiles)

    got = run_cli("get", "--store", store, "--compartment-id", "1000", "--user-account-id", "alice")
    assert got.returncode == 0 and json.loads(got.stdout) == profiles[0]
    got = run_cli("get", "--store", store, "--email-hash", BOB["email_hash"])
    assert got.returncode == 0 and json.loads(got.stdout) == profiles[1]
    missing = run_cli("get", "--store", store, "--user-agent-id", "vec:000000000042")
    assert missing.returncode == 1 and "no such profile" in missing.stderr
    bad = run_cli("get", "--store", store, "--compartment-id", "1000")
    assert bad.returncode == 2 and "exactly one identifier" in bad.stderr

    versions = run_cli("versions", "--store", store)
    assert versions.returncode == 0 and rep["execution_id"] in versions.stdout


def test_the_local_runner_uses_a_worker_per_core_and_stays_quiet(tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--store",
        tmp_path / "s",
        "--report",
        tmp_path / "r.json",
        "--rejects",
        tmp_path / "rej",
        EXAMPLE,
        beam=LOCAL,
    )
    assert result.returncode == 0
    # Our log and summary only: nothing from Beam or its worker processes.
    assert all(
        line.startswith("profile-import: ") or " INFO profile_import: " in line
        for line in result.stderr.splitlines()
    ), result.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["workers"] == os.cpu_count() and rep["counts"]["accepted"] == 6


def test_report_goes_to_stdout_without_report_option(tmp_path: Path) -> None:
    result = run_cli("run", "--store", tmp_path / "s", "--rejects", tmp_path / "r", EXAMPLE)
    assert result.returncode == 0
    assert json.loads(result.stdout)["counts"]["lines"] == 9


def test_rerun_is_already_applied_unless_asked(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = write_lines(
        tmp_path / "a.ndjson", [upsert({"email_hash": "h"}, {"t": ["x"]}, merge_objects=True)]
    )
    copy = tmp_path / "copy-of-a.ndjson"
    copy.write_bytes(src.read_bytes())
    first = run_ok("--store", str(store), str(src))
    again = run_cli("run", "--store", store, copy)
    assert again.returncode == 0
    rep = json.loads(again.stdout)
    assert rep["status"] == "ALREADY_APPLIED"
    assert [(a["path"], a["execution_id"]) for a in rep["already_applied"]] == [
        (str(copy), first["execution_id"])
    ]
    assert rep["inputs"][0]["skipped"] == "already_applied"
    assert "nothing changed" in again.stderr and rep["counts"]["accepted"] == 0
    assert without_times(export(store)) == [{"email_hash": "h", "user_profile": {"t": ["x"]}}]
    # Another default compartment changes what the lines mean: not the same execution.
    other = json.loads(
        run_cli("run", "--store", store, "--default-compartment-id", "9", src).stdout
    )
    assert other["status"] == "SUCCEEDED"
    reapplied = run_ok("--store", str(store), "--allow-reapply", str(src))
    assert reapplied["status"] == "SUCCEEDED"
    assert without_times(export(store)) == [
        {"email_hash": "h", "user_profile": {"t": ["x", "x", "x"]}}
    ]


def test_timestamps_follow_content_changes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    h = {"email_hash": "h"}
    r1 = run_ok("--store", str(store), str(write_lines(tmp_path / "1", [upsert(h, {"a": 1})])))
    r2 = run_ok("--store", str(store), str(write_lines(tmp_path / "2", [upsert(h, {"a": 1}), ""])))
    assert r2["counts"]["profiles_unchanged"] == 1
    (p,) = export(store)
    assert p["created_at"] == p["last_modified_at"] == r1["started_at"]
    r3 = run_ok("--store", str(store), str(write_lines(tmp_path / "3", [upsert(h, {"b": 2})])))
    (p,) = export(store)
    assert (p["created_at"], p["last_modified_at"]) == (r1["started_at"], r3["started_at"])
    r4 = run_ok(
        "--store", str(store), str(write_lines(tmp_path / "4", [delete(h), upsert(h, {"a": 1})]))
    )
    (p,) = export(store)
    assert p["created_at"] == p["last_modified_at"] == r4["started_at"]


def test_dry_run_reports_and_touches_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rep = run_ok("--store", str(store), "--dry-run", "--rejects", str(tmp_path / "r"), str(EXAMPLE))
    assert rep["status"] == "SUCCEEDED_WITH_ERRORS" and rep["dry_run"] is True
    assert rep["counts"]["profiles_created"] == 2 and rep["version"] is None
    assert not store.exists()
    run_ok("--store", str(store), "--rejects", str(tmp_path / "r"), str(EXAMPLE))
    before = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    more = write_lines(tmp_path / "more.ndjson", [delete(BOB)])
    rep = run_ok("--store", str(store), "--dry-run", str(more))
    assert rep["counts"]["profiles_deleted"] == 1
    after = sorted((p.relative_to(store), p.read_bytes()) for p in store.rglob("*") if p.is_file())
    assert after == before


@pytest.mark.parametrize(
    ("limit", "fails"),
    [
        (["--max-rejects", "1"], True),
        (["--max-rejects", "2"], False),
        (["--max-reject-ratio", "0.2"], True),  # 2 of 8 non-blank lines
        (["--max-reject-ratio", "0.25"], False),
    ],
)
def test_reject_limits(tmp_path: Path, limit: list[str], fails: bool) -> None:
    store, report, rejects = tmp_path / "store", tmp_path / "report.json", tmp_path / "rej.ndjson"
    result = run_cli(
        "run", "--store", store, "--report", report, "--rejects", rejects, *limit, EXAMPLE
    )
    rep = json.loads(report.read_text())
    assert len(read_ndjson(rejects)) == 2  # the rejects are written either way
    if fails:
        assert result.returncode == 1 and rep["status"] == "FAILED"
        assert "the store is unchanged" in result.stderr
        assert not store.exists() and rep["version"] is None  # a failed first run: no store
        assert rep["failure"].startswith(("2 rejected lines exceed", "reject ratio 0.2500"))
        codes = [entry.split(": ", 1)[1].split()[0] for entry in rep["data"]]
        assert codes == ["INVALID_FIELD", "INVALID_JSON"]  # data: the rejected lines only
    else:
        assert result.returncode == 0 and rep["status"] == "SUCCEEDED_WITH_ERRORS"
        assert len(export(store)) == 2


def test_redacted_rejects_keep_no_data(tmp_path: Path) -> None:
    rejects = tmp_path / "rej.ndjson"
    run_ok(
        "--store", str(tmp_path / "s"), "--redact-rejects", "--rejects", str(rejects), str(EXAMPLE)
    )
    records = read_ndjson(rejects)
    assert [set(r) for r in records] == [{"file", "line", "code", "message"}] * 2


def test_profile_schema(tmp_path: Path) -> None:
    schema = tmp_path / "profile.schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"age": {"type": "integer"}}}))
    lines = [upsert({"email_hash": "a"}, {"age": 3}), upsert({"email_hash": "b"}, {"age": "old"})]
    rejects = tmp_path / "rej.ndjson"
    rep = run_ok(
        "--store",
        str(tmp_path / "s"),
        "--profile-schema",
        str(schema),
        "--rejects",
        str(rejects),
        str(write_lines(tmp_path / "in.ndjson", lines)),
    )
    assert rep["rejects_by_code"] == {"PROFILE_SCHEMA_VIOLATION": 1}
    (reject,) = read_ndjson(rejects)
    assert reject["message"] == "user_profile/age: 'old' is not of type 'integer'"


@pytest.mark.parametrize(
    ("schema_text", "message"),
    [("{not json", "cannot be read as JSON"), ('{"type": 5}', "not a valid JSON Schema")],
)
def test_bad_profile_schema_is_a_usage_error(
    tmp_path: Path, schema_text: str, message: str
) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(schema_text)
    result = run_cli("run", "--store", tmp_path / "s", "--profile-schema", schema, EXAMPLE)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_compressed_inputs_and_globs_apply_in_order(tmp_path: Path) -> None:
    h = {"email_hash": "h"}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "1.ndjson.gz").write_bytes(
        gzip.compress(json.dumps(upsert(h, {"v": [1]})).encode() + b"\n")
    )
    (tmp_path / "in" / "2.ndjson.bz2").write_bytes(
        bz2.compress(
            json.dumps(upsert(h, {"v": [2]}, merge_objects=True)).encode()
        )  # no final newline
    )
    write_lines(tmp_path / "in" / "3.ndjson", [upsert(h, {"v": [3]}, merge_objects=True)])
    rep = run_ok("--store", str(tmp_path / "s"), str(tmp_path / "in" / "*.ndjson*"))
    assert [Path(i["path"]).name for i in rep["inputs"]] == [
        "1.ndjson.gz",
        "2.ndjson.bz2",
        "3.ndjson",
    ]
    assert [i["compression"] for i in rep["inputs"]] == ["gzip", "bz2", None]
    assert without_times(export(tmp_path / "s")) == [
        {"email_hash": "h", "user_profile": {"v": [1, 2, 3]}}
    ]


def test_crlf_bom_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    good = json.dumps(upsert({"email_hash": "h"}, {"a": 1}, force_replace=True)).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n\r\n" + b'{"bad": "\xff"}\r\n')
    rejects = tmp_path / "rej.ndjson"
    rep = run_ok("--store", str(tmp_path / "s"), "--rejects", str(rejects), str(path))
    assert rep["counts"] | {} == rep["counts"] and rep["counts"]["blank"] == 1
    (reject,) = read_ndjson(rejects)
    assert reject["code"] == "INVALID_JSON" and reject["line"] == 3
    assert reject["raw"] == '{"bad": "\ufffd"}' and reject["raw_base64"] == "eyJiYWQiOiAi/yJ9"


def test_line_too_large(tmp_path: Path) -> None:
    lines = [upsert({"email_hash": "h"}, {"big": "x" * 500}), upsert({"email_hash": "k"}, {})]
    rejects = tmp_path / "rej.ndjson"
    rep = run_ok(
        "--store",
        str(tmp_path / "s"),
        "--max-line-bytes",
        "200",
        "--rejects",
        str(rejects),
        str(write_lines(tmp_path / "in.ndjson", lines)),
    )
    (reject,) = read_ndjson(rejects)
    assert reject["code"] == "LINE_TOO_LARGE" and reject["raw_truncated"] is True
    assert len(reject["raw"]) == 200 and "over the limit of 200" in reject["message"]
    assert rep["counts"]["accepted"] == 1


def test_empty_input_is_a_successful_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    rep = run_ok("--store", str(tmp_path / "s"), str(empty))
    assert rep["status"] == "SUCCEEDED" and rep["counts"]["lines"] == 0
    assert rep["inputs"][0]["lines"] == 0 and rep["version"] == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.ndjson", "not found"),
        (lambda d: d, "a directory, not a file"),
        (lambda d: d / "*.nope", "matches no file"),
    ],
)
def test_unreadable_input_exits_2_with_a_failed_report(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    report = tmp_path / "report.json"
    result = run_cli("run", "--store", tmp_path / "s", "--report", report, path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert json.loads(report.read_text())["status"] == "FAILED"
    assert not (tmp_path / "s").exists()


def test_a_corrupt_archive_fails_the_run_naming_the_input(tmp_path: Path) -> None:
    """The launcher reads no input content: the workers find a corrupt archive."""
    bad = tmp_path / "bad.ndjson.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00junk")
    report = tmp_path / "report.json"
    result = run_cli("run", "--store", tmp_path / "s", "--report", report, bad)
    assert result.returncode == 1
    assert f"input {bad}: cannot be read" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(report.read_text())["status"] == "FAILED"


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["run", "--max-rejects", "-1", "x"],
        ["run", "--max-reject-ratio", "2", "x"],
        ["run", "--store", "s", "x", "DataflowRunner", "--runner"],
        ["export", "--unknown"],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run_cli(*args, beam=())
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("profile-import: error: ") and "--help" in result.stderr


def test_a_folder_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("run", "--store", tmp_path, EXAMPLE)
    assert result.returncode == 2 and "not a profile store" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_rollback_and_prune(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for n in (1, 2, 3):
        run_ok(
            "--store",
            str(store),
            str(write_lines(tmp_path / f"{n}", [upsert({"email_hash": "h"}, {"n": n})])),
        )
    result = run_cli("rollback", "--store", store, "--to", "1")
    assert result.returncode == 0 and "published again as version 4" in result.stderr
    assert without_times(export(store)) == [{"email_hash": "h", "user_profile": {"n": 1}}]
    assert run_cli("prune", "--store", store, "--keep", "2").returncode == 0
    listed = run_cli("versions", "--store", store).stdout.splitlines()
    assert [line[1:].split()[0] for line in listed] == ["3", "4"] and listed[1].startswith("*")
    assert without_times(export(store)) == [{"email_hash": "h", "user_profile": {"n": 1}}]
    assert run_cli("rollback", "--store", store, "--to", "1").returncode == 1


@pytest.mark.parametrize(
    "command", [["export"], ["versions"], ["prune", "--keep", "1"], ["get", "--email-hash", "h"]]
)
def test_a_missing_store_is_an_error_not_an_empty_store(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(command[0], "--store", tmp_path / "typo", *command[1:])
    assert result.returncode == 1 and f"no profile store at {tmp_path / 'typo'}" in result.stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max_rejectz=0"], "unknown option(s): --max_rejectz=0"),
        (["--dryrun"], "unknown option(s): --dryrun"),
        (["--runner=PortableRunner"], "is on this machine, where its workers cannot write"),
        (["--rejects", "/nonexistent/folder/r.ndjson"], "--rejects /nonexistent/folder/r.ndjson"),
        (["--report", "/nonexistent/folder/r.json"], "--report /nonexistent/folder/r.json"),
    ],
)
def test_options_are_checked_before_anything_runs(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("run", "--store", tmp_path / "s", *args, EXAMPLE)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_store_that_cannot_be_created_is_a_clear_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_cli(
        "run", "--store", tmp_path / "file" / "store", "--rejects", tmp_path / "r", EXAMPLE
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr  # a bad --store
    assert f"store {tmp_path / 'file' / 'store'}: cannot read" in result.stderr


def test_a_profile_schema_with_a_broken_ref_is_a_usage_error(tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"$ref": "#/$defs/missing"}))
    result = run_cli("run", "--store", tmp_path / "s", "--profile-schema", schema, EXAMPLE)
    assert result.returncode == 2 and "--profile-schema" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dry_run_of_an_applied_import_says_so(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_ok("--store", str(store), "--rejects", str(tmp_path / "r"), str(EXAMPLE))
    rep = run_ok("--store", str(store), "--dry-run", str(EXAMPLE))
    assert rep["status"] == "ALREADY_APPLIED" and rep["dry_run"] is True


def test_a_file_named_like_a_glob_is_taken_as_named(tmp_path: Path) -> None:
    named = write_lines(tmp_path / "data[1].ndjson", [upsert({"email_hash": "named"}, {})])
    write_lines(tmp_path / "data1.ndjson", [upsert({"email_hash": "decoy"}, {})])
    run_ok("--store", str(tmp_path / "s"), str(named))
    assert [p["email_hash"] for p in export(tmp_path / "s")] == ["named"]


def test_export_is_sorted_by_identifier(tmp_path: Path) -> None:
    names = ["abc!", "abc", "abc d", "ab", "é", "Z", "abc\t"]
    lines = [upsert({"email_hash": n}, {}) for n in names]
    lines += [upsert({"compartment_id": c, "user_account_id": a}, {}) for c, a in
              [("10", "a"), ("1", "b"), ("1", "a b"), ("1", "a")]]  # fmt: skip
    lines += [upsert({"user_agent_id": "v"}, {})]
    run_ok("--store", str(tmp_path / "s"), str(write_lines(tmp_path / "in.ndjson", lines)))
    got = [
        tuple(
            p[k]
            for k in ("compartment_id", "user_account_id", "email_hash", "user_agent_id")
            if k in p
        )
        for p in export(tmp_path / "s")
    ]
    assert got == [("1", "a"), ("1", "a b"), ("1", "b"), ("10", "a"),
                   *((n,) for n in sorted(names)), ("v",)]  # fmt: skip


def test_integers_beyond_64_bits_are_kept_exactly_or_rejected(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    lines = [
        json.dumps(upsert({"compartment_id": big, "user_account_id": 1}, {"n": 1})),
        json.dumps(upsert({"email_hash": "h"}, {"n": big})),
    ]
    rejects = tmp_path / "rej.ndjson"
    run_ok(
        "--store",
        str(tmp_path / "s"),
        "--rejects",
        str(rejects),
        str(write_lines(tmp_path / "in", lines)),
    )
    assert [p["compartment_id"] for p in export(tmp_path / "s")] == [str(big)]
    (reject,) = read_ndjson(rejects)
    assert reject["code"] == "INVALID_FIELD" and "user_profile/n" in reject["message"]


@pytest.mark.slow
def test_several_worker_processes_small_splits_and_buckets_give_the_same_store(
    tmp_path: Path,
) -> None:
    """Nothing relies on one process's memory: every stage spread over three
    worker processes, inputs in 64 KiB ranges, three buckets, equals one worker."""
    src = write_big_input(tmp_path / "big.ndjson", 12_000, users=3_000)
    common = ("--buckets", "3", "--split-bytes", "65536", "--rejects", tmp_path / "r")
    one = run_cli("run", "--store", tmp_path / "one", "--report", tmp_path / "1.json", *common, src)
    assert one.returncode == 0, one.stderr
    many = run_cli(
        "run",
        "--store",
        tmp_path / "many",
        "--report",
        tmp_path / "3.json",
        *common,
        src,
        beam=("--direct_num_workers=3",),
    )
    assert many.returncode == 0, many.stderr
    report = json.loads((tmp_path / "3.json").read_text())
    assert report["workers"] == 3 and report["counts"]["lines"] == 12_000
    assert json.loads((tmp_path / "1.json").read_text())["counts"] == report["counts"]
    assert without_times(export(tmp_path / "many")) == without_times(export(tmp_path / "one"))
