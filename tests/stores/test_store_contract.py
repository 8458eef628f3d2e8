"""What every store does, checked the same way on all five (folder, SQLite,
PostgreSQL, S3, GCS) through the command line: a store that no run created is
refused in one line; runs publish numbered versions that `export`, `get` and
`versions` read back, `verify` finds them sound, `rollback` publishes an older
version again where the store keeps versions (and is refused in one line,
changing nothing, where it does not), and `prune` drops the older versions
(no longer listed nor answered by `changes --since`) and keeps the current state.
Each store's own tests sit beside this file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profile_import.stores import capabilities

from ..helpers import read_cli, run_cli, upsert, without_times, write_lines
from ..spec.test_conformance import FIXTURES, STORES

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
