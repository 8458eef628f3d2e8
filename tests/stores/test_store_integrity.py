"""A damaged store is never read as a good one, through the command line.

A store of 840 profiles is damaged the ways the folder store can be (a file cut,
edited, emptied, shortened, lost; CURRENT lost), and each reader must fail
with one clear line (exit 1) and a run must never publish over it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from profile_import.core.identifiers import Identifier

from ..helpers import read_cli, run_cli, upsert, write_lines

PROFILES = 840


def _identifier(i: int) -> dict[str, object]:
    kinds: list[dict[str, object]] = [
        {"email_hash": f"h{i}"},
        {"compartment_id": 1000 + i % 3, "user_account_id": f"a{i}"},
        {"user_agent_id": f"u{i}"},
    ]
    return kinds[i % 3]


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    lines = [upsert(_identifier(i), {"n": i, "tags": ["x"]}) for i in range(PROFILES)]
    path = write_lines(folder / "in.ndjson", lines)
    result = run_cli("run", "--store", folder / "store", "--report", folder / "r.json", path)
    assert result.returncode == 0, result.stderr
    return folder / "store"


@pytest.fixture
def store(good_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(good_store, copy)
    return copy


def bucket_file(store: Path) -> Path:
    """A bucket file with a few profiles in it."""
    files = sorted(store.glob("data/*/bucket-*.kv"))
    assert len(files) == 64
    return next(f for f in files if f.read_bytes().count(b"\n") >= 5)


def get_args(line: bytes) -> list[str]:
    """The `get` options of the profile of a store line."""
    fields = Identifier.from_key(line.split(b"\t", 1)[0]).fields()
    return [f"--{name.replace('_', '-')}={value}" for name, value in fields.items()]


def cut_midline(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:-20])


def line_not_json(f: Path) -> None:
    lines = f.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].split(b"\t")[0] + b"\tgarbage{\n"
    f.write_bytes(b"".join(lines))


def emptied(f: Path) -> None:
    f.write_bytes(b"")


def last_line_dropped(f: Path) -> None:
    f.write_bytes(b"".join(f.read_bytes().splitlines(keepends=True)[:-1]))


def edited_in_place(f: Path) -> None:
    """Same size, same line count: only the checksum tells."""
    data = f.read_bytes()
    f.write_bytes(data.replace(b'"tags":["x"]', b'"tags":["y"]', 1))


def missing(f: Path) -> None:
    f.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "cut mid-line": (cut_midline, ": is cut short (no newline at its end)"),
    "a line not JSON": (line_not_json, "line 2: holds a record that is not valid JSON"),
    "emptied": (emptied, "has 0 lines, its version records"),
    "last line dropped": (last_line_dropped, "lines, its version records"),
    "edited in place": (edited_in_place, "has crc32"),
    "missing": (missing, ".kv is missing"),
}


def one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("profile-import: ") and "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], stderr


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_bucket_file_is_an_error_for_every_reader(store: Path, damage: str) -> None:
    damage_file, problem = DAMAGE[damage]
    f = bucket_file(store)
    lines = f.read_bytes().splitlines(keepends=True)
    first, last = get_args(lines[0]), get_args(lines[-1])
    damage_file(f)

    result = read_cli("export", "--store", store, "--output", store.parent / "out.ndjson")
    assert result.returncode == 1
    one_error_line(result.stderr, f"store {store} is damaged: data/", "profile-import verify")
    assert not (store.parent / "out.ndjson").exists()  # never half an export
    assert read_cli("export", "--store", store).returncode == 1

    for args in (first, last):  # whatever line of the bucket is asked for
        result = read_cli("get", "--store", store, *args)
        assert result.returncode == 1 and result.stdout == ""
        one_error_line(result.stderr, "is damaged")

    result = read_cli("verify", "--store", store)
    assert result.returncode == 1, result.stdout
    assert problem in result.stdout
    assert result.stdout.splitlines()[-1].startswith("version 1: 129 files")
    assert "DAMAGED" in result.stdout.splitlines()[-1]


def test_verify_says_a_sound_store_is_sound(store: Path) -> None:
    result = read_cli("verify", "--store", store)
    assert result.returncode == 0, result.stdout
    assert result.stdout == (
        f"version 1: 129 files, {PROFILES} lines: sound "
        "(line counts, sizes, checksums, keys and records as recorded)\n"
    )
    assert read_cli("verify", "--store", store, "--version", "1").returncode == 0
    result = read_cli("verify", "--store", store, "--version", "2")
    assert result.returncode == 1
    one_error_line(result.stderr, "has no version 2")


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_run_never_publishes_over_a_damaged_bucket(store: Path, damage: str) -> None:
    f = bucket_file(store)
    last = f.read_bytes().splitlines()[-1]
    record = json.loads(last.split(b"\t", 1)[1])
    ident = {k: v for k, v in record.items() if k not in ("user_profile", "created_at")}
    ident.pop("last_modified_at")
    DAMAGE[damage][0](f)
    current = (store / "CURRENT").read_bytes()
    # A merge onto the last profile: over a dropped line it would create it anew.
    path = write_lines(store.parent / "merge.ndjson", [upsert(ident, {"m": 1})])
    result = run_cli("run", "--store", store, "--report", store.parent / "r.json", path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    report = json.loads((store.parent / "r.json").read_text())
    assert report["status"] == "FAILED" and "is damaged" in report["failure"]
    assert (store / "CURRENT").read_bytes() == current
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["00000001.json"]
    assert len(list((store / "data").iterdir())) == 1


@pytest.mark.parametrize("current", ["missing", "not a number", "empty"])
def test_a_store_without_its_pointer_is_damaged_not_empty(store: Path, current: str) -> None:
    if current == "missing":
        (store / "CURRENT").unlink()
    else:
        (store / "CURRENT").write_text("" if current == "empty" else "seven\n")
    for command in (
        ["export"],
        ["get", "--email-hash", "h0"],
        ["versions"],
        ["verify"],
        ["rollback", "--to", "1"],
        ["prune", "--keep", "1"],
    ):
        result = read_cli(command[0], "--store", store, *command[1:])
        assert result.returncode == 1, command
        one_error_line(result.stderr, f"store {store} is damaged: CURRENT is")
    if current != "missing":
        return
    one = write_lines(store.parent / "one.ndjson", [upsert({"email_hash": "new"}, {})])
    result = run_cli("run", "--store", store, "--report", store.parent / "r.json", one)
    assert result.returncode == 1 and "CURRENT is" in result.stderr
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["00000001.json"]
    assert not (store / "CURRENT").exists()  # not a 1-profile version over 840


def test_a_failed_first_run_leaves_no_store(tmp_path: Path) -> None:
    bad = write_lines(tmp_path / "bad.ndjson", ["{not json", upsert({"email_hash": "h"}, {})])
    for store in (tmp_path / "new", tmp_path / "empty"):
        if store.name == "empty":
            store.mkdir()  # a folder made for the store: it stays, empty
        result = run_cli(
            "run", "--store", store, "--buckets", "8", "--max-rejects", "0",
            "--report", tmp_path / "r.json", "--rejects", tmp_path / "rej.ndjson", bad,
        )  # fmt: skip
        assert result.returncode == 1
        assert json.loads((tmp_path / "r.json").read_text())["status"] == "FAILED"
        assert store.exists() == (store.name == "empty")
        assert not store.exists() or list(store.iterdir()) == []
    # The bucket count of the failed run was not fixed: the next run picks its own.
    good = write_lines(tmp_path / "good.ndjson", [upsert({"email_hash": "h"}, {})])
    store = tmp_path / "new"
    ok = run_cli("run", "--store", store, "--buckets", "16", "--report", tmp_path / "r.json", good)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((store / "profile-store.json").read_text())["buckets"] == 16
    assert len(json.loads((store / "versions" / "00000001.json").read_text())["shards"]) == 16


def test_export_to_a_file_is_the_same_as_to_stdout(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    assert read_cli("export", "--store", store, "--output", out).returncode == 0
    stdout = read_cli("export", "--store", store).stdout
    assert out.read_text() == stdout and len(stdout.splitlines()) == PROFILES
    result = read_cli("export", "--store", store, "--format", "parquet")
    assert result.returncode == 2
    one_error_line(result.stderr, "--format parquet needs --output FILE")
    result = read_cli("export", "--store", store, "--output", tmp_path / "no" / "out.ndjson")
    assert result.returncode == 2
    one_error_line(result.stderr, f"export --output {tmp_path / 'no' / 'out.ndjson'}: no folder")


# --- the ledger, and what CURRENT names ---------------------------------------


@pytest.fixture(scope="module")
def merged_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions: `tags` seeded, then a deep merge that appends to them."""
    folder = tmp_path_factory.mktemp("merged")
    store = folder / "store"
    seed = write_lines(folder / "seed.ndjson", [upsert({"email_hash": "h"}, {"tags": ["x"]})])
    assert run_cli("run", "--quiet", "--store", store, seed).returncode == 0
    assert run_cli("run", "--quiet", "--store", store, _deep_merge(folder)).returncode == 0
    assert _tags(store) == ["x", "y"]
    return store


def _deep_merge(folder: Path) -> Path:
    line = upsert({"email_hash": "h"}, {"tags": ["y"]}, merge_objects=True)
    return write_lines(folder / "merge.ndjson", [line])


def _tags(store: Path) -> list[str]:
    result = read_cli("get", "--store", store, "--email-hash", "h")
    assert result.returncode == 0, result.stderr
    tags: list[str] = json.loads(result.stdout)["user_profile"]["tags"]
    return tags


@pytest.fixture
def merged(merged_good: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(merged_good, copy)
    return copy


def manifest(store: Path, number: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((store / "versions" / f"{number:08d}.json").read_text())
    return loaded


def merge_segment(store: Path) -> Path:
    """The ledger segment of the deep merge's execution (version 2's own)."""
    execution = manifest(store, 2)["execution"]["execution_id"]
    return store / "ledger" / f"{execution}.ndjson"


def a_byte_changed(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[data.index(b'"version":2') + len('"version":')] = ord("7")
    f.write_bytes(bytes(data))


LEDGER_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "emptied": (emptied, ".ndjson has 0 lines, its version records 1"),
    "deleted": (missing, ".ndjson is missing"),
    "a byte changed": (a_byte_changed, ".ndjson has crc32"),
    "cut mid-line": (cut_midline, ".ndjson: its last line is cut short"),
}


def rerun_fails_on_damage(store: Path, needle: str) -> None:
    """The deep merge run again: one error line, nothing published, the
    profile as it was (never the array appended to a second time)."""
    current = (store / "CURRENT").read_bytes()
    report = store.parent / "r.json"
    again = _deep_merge(store.parent)
    result = run_cli("run", "--quiet", "--store", store, "--report", report, again)
    assert result.returncode == 1, result.stderr
    one_error_line(result.stderr, f"store {store} ", needle)
    assert json.loads(report.read_text())["status"] == "FAILED"
    assert (store / "CURRENT").read_bytes() == current
    assert sorted(p.name for p in (store / "versions").iterdir()) == [
        "00000001.json",
        "00000002.json",
    ]
    assert _tags(store) == ["x", "y"]


def test_a_sound_ledger_skips_the_applied_merge(merged: Path) -> None:
    result = read_cli("verify", "--store", merged)
    assert result.returncode == 0, result.stdout
    # A bucket, two ledger segments and a change segment.
    assert result.stdout.startswith("version 2: 4 files, 1 lines: sound")
    assert [s["lines"] for s in manifest(merged, 2)["ledger"]] == [1, 1]
    again = _deep_merge(merged.parent)
    report = merged.parent / "r.json"
    result = run_cli("run", "--quiet", "--store", merged, "--report", report, again)
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["status"] == "ALREADY_APPLIED"
    assert _tags(merged) == ["x", "y"]


@pytest.mark.parametrize("damage", LEDGER_DAMAGE)
def test_a_damaged_ledger_segment_is_damage_never_a_reapply(merged: Path, damage: str) -> None:
    damage_file, problem = LEDGER_DAMAGE[damage]
    damage_file(merge_segment(merged))

    result = read_cli("verify", "--store", merged)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert any(problem in line and line.startswith("ledger/") for line in lines), lines
    assert lines[-1].startswith("version 2: 4 files") and "DAMAGED" in lines[-1]
    # Version 1 does not list the merge's segment: it is sound.
    assert read_cli("verify", "--store", merged, "--version", "1").returncode == 0

    rerun_fails_on_damage(merged, f"is damaged: ledger/{merge_segment(merged).name}")


def test_current_naming_a_missing_version_is_damage(merged: Path) -> None:
    (merged / "versions" / "00000002.json").unlink()
    result = read_cli("verify", "--store", merged)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "CURRENT names version 2, which versions/ does not hold; restore it from a backup, "
        "or write a kept version's number in CURRENT (`verify --version N` checks one)",
        "version 2: 0 files, 0 lines: DAMAGED, 1 problem(s)",
    ]
    assert read_cli("verify", "--store", merged, "--version", "1").returncode == 0
    for command in (["export"], ["get", "--email-hash", "h"]):
        result = read_cli(command[0], "--store", merged, *command[1:])
        assert result.returncode == 1, command
        one_error_line(result.stderr, f"store {merged} is damaged: version 2 is unreadable")
    again = _deep_merge(merged.parent)
    result = run_cli("run", "--quiet", "--store", merged, again)
    assert result.returncode == 1
    one_error_line(result.stderr, "is damaged: version 2 is unreadable")
    assert sorted(p.name for p in (merged / "versions").iterdir()) == ["00000001.json"]
    # The repair the line names: CURRENT back to a kept version.
    (merged / "CURRENT").write_text("1\n")
    assert read_cli("verify", "--store", merged).returncode == 0


def as_format_3(store: Path) -> None:
    """The store as the previous format wrote it: ledger segments by path alone."""
    meta = store / "profile-store.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format_version": 3}))
    for f in (store / "versions").iterdir():
        loaded = json.loads(f.read_text())
        loaded["ledger"] = [segment["path"] for segment in loaded["ledger"]]
        f.write_text(json.dumps(loaded))


def test_a_format_3_ledger_is_read_said_unchecked_and_recorded_by_the_next_run(
    merged: Path,
) -> None:
    as_format_3(merged)
    result = read_cli("verify", "--store", merged)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and "sound" in lines[-1]
    assert all("recorded without its line count and checksum" in line for line in lines[:2])
    # Still skipped: the format-3 ledger is read.
    again = _deep_merge(merged.parent)
    assert run_cli("run", "--quiet", "--store", merged, again).returncode == 0
    assert _tags(merged) == ["x", "y"]

    other = write_lines(merged.parent / "other.ndjson", [upsert({"email_hash": "o"}, {})])
    assert run_cli("run", "--quiet", "--store", merged, other).returncode == 0
    assert [s["lines"] for s in manifest(merged, 3)["ledger"]] == [1, 1, 1]
    assert json.loads((merged / "profile-store.json").read_text())["format_version"] == 4
    result = read_cli("verify", "--store", merged)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1, result.stdout


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_a_damaged_format_3_ledger_segment_is_damage(merged: Path, damage: str) -> None:
    as_format_3(merged)
    LEDGER_DAMAGE[damage][0](merge_segment(merged))
    problem = "holds no entry (it was emptied)" if damage == "emptied" else ".ndjson is missing"
    result = read_cli("verify", "--store", merged)
    assert result.returncode == 1 and problem in result.stdout, result.stdout
    rerun_fails_on_damage(merged, f"is damaged: ledger/{merge_segment(merged).name} ")
