"""Reading many profiles: the store's scan / get_many, and the list / get --ids commands."""

from __future__ import annotations

import json
import mmap
import random
from pathlib import Path
from typing import Any

import pytest

from profile_import.core.cursors import Cursor, CursorError
from profile_import.core.identifiers import Identifier
from profile_import.stores import sorted_files
from profile_import.stores.base import StoreError
from profile_import.stores.snapshot import SnapshotStore

from ..helpers import run_cli
from ..stores.test_snapshot_store import commit_profiles

pytestmark = pytest.mark.spec(section=5)


def ident(n: int) -> Identifier:
    kind = n % 3
    if kind == 0:
        return Identifier.account(str(1000 + n % 2), f"acct-{n}")
    if kind == 1:
        return Identifier.email_hash(f"h{n:04d}")
    return Identifier.user_agent_id(f"ua-{n}")


def profile(n: int) -> dict[str, Any]:
    return {"n": n, "even": n % 2 == 0, "city": ["Paris", "Lyon", "Oslo"][n % 3]}


def make_store(tmp_path: Path, count: int = 60, buckets: int = 4) -> SnapshotStore:
    store = SnapshotStore(str(tmp_path / "store"), buckets=buckets)
    commit_profiles(store, "r1", {ident(n): profile(n) for n in range(count)})
    return store


# --- sorted files -------------------------------------------------------------


@pytest.mark.parametrize("linear_bytes", [1, 64, 1 << 16])
def test_offset_of_agrees_with_a_linear_search(
    tmp_path: Path, linear_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sorted_files, "LINEAR_BYTES", linear_bytes)
    rnd = random.Random(1)
    keys = sorted({f"k{rnd.randrange(10_000):05d}".encode() for _ in range(300)})
    lines = [k + b"\t" + b"x" * rnd.choice([1, 10, 3000]) + b"\n" for k in keys]
    path = tmp_path / "bucket"
    path.write_bytes(b"".join(lines))
    starts = [sum(len(x) for x in lines[:i]) for i in range(len(lines) + 1)]
    probes = [b"", b"k", b"z", *keys, *(k + b"0" for k in keys[::7])]
    with path.open("rb") as f:
        for probe in probes:
            for strictly_after in (True, False):
                expected = next(
                    (
                        starts[i]
                        for i, k in enumerate(keys)
                        if (k > probe if strictly_after else k >= probe)
                    ),
                    starts[-1],
                )
                assert sorted_files.offset_of(f, probe, strictly_after=strictly_after) == expected
        for dense_bytes in (1, 1 << 30):  # bisecting sparse keys, or one pass for dense ones
            monkeypatch.setattr(sorted_files, "DENSE_BYTES", dense_bytes)
            for wanted in ([*keys[::5], b"k99999z"], [b"a", keys[0], keys[-1]], [b"zz"], []):
                found = list(sorted_files.find_sorted(f, sorted(wanted)))
                expected_found = [(k, lines[keys.index(k)][len(k) + 1 : -1]) for k in wanted
                                  if k in keys]  # fmt: skip
                assert found == expected_found


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("record_sizes", [(0, 1, 10), (1, 10, 3000), (2000, 9000)])
def test_find_mapped_agrees_with_a_lookup(
    tmp_path: Path, seed: int, record_sizes: tuple[int, ...]
) -> None:
    """Galloping and bisecting in a mapped file finds exactly the stored keys,
    whatever the line lengths (empty records are tombstones), prefixes included."""
    rnd = random.Random(seed)
    keys = sorted({f"k{rnd.randrange(5_000)}".encode() for _ in range(400)})
    lines = [k + b"\t" + b"x" * rnd.choice(record_sizes) + b"\n" for k in keys]
    data = b"".join(lines)
    path = tmp_path / "bucket"
    path.write_bytes(data)
    records_of = {k: line[len(k) + 1 : -1] for k, line in zip(keys, lines, strict=True)}
    asks = [
        sorted({*rnd.sample(keys, 7), b"k", b"k9999", b"a", b"zz"}),
        keys,
        sorted({*keys[::3], *(k + b"0" for k in keys[::5])}),
        [keys[0]],
        [keys[-1]],
        [b"k" + keys[-1]],
        [],
    ]
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for wanted in asks:
            expected = [(k, records_of[k]) for k in wanted if k in records_of]
            assert list(sorted_files.find_mapped(mapped, wanted)) == expected
            assert list(sorted_files.find_mapped(data, wanted)) == expected


def test_find_mapped_names_a_line_that_is_not_a_store_line() -> None:
    data = b"a\t1\nb-no-separator\nc\t3\n"
    with pytest.raises(ValueError, match="not a store line"):
        list(sorted_files.find_mapped(data, [b"b"]))


# --- the store ----------------------------------------------------------------


def test_scan_is_export_in_order_and_starts_after_a_key(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    version = store.current()
    assert version is not None
    everything = list(store.scan(version))
    assert [r for _, r in everything] == list(store.export())
    keys = [k for k, _ in everything]
    for cut in (0, 1, 17, len(keys) - 1):
        assert [k for k, _ in store.scan(version, keys[cut])] == keys[cut + 1 :]
    # A key that is not stored starts at the next one.
    assert [k for k, _ in store.scan(version, keys[5] + b"\x00")] == keys[6:]
    evens = [k for k, r in everything if json.loads(r)["user_profile"]["even"]]
    assert [k for k, _ in store.scan(version, keep=lambda r: b'"even":true' in r)] == evens


def test_get_many_reads_only_the_asked_keys(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    version = store.current()
    assert version is not None
    asked = [ident(n).key for n in (5, 1, 59, 7)] + [Identifier.email_hash("nope").key]
    found = store.get_many(version, asked)
    assert set(found) == set(asked[:4])
    for n in (5, 1, 59, 7):
        assert json.loads(found[ident(n).key])["user_profile"] == profile(n)


def test_an_old_version_stays_readable_until_pruned(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    old = store.current()
    assert old is not None
    commit_profiles(store, "r2", {ident(n): {"n": -n} for n in range(60)})
    assert json.loads(next(store.scan(old))[1])["user_profile"]["n"] >= 0
    assert (
        store.get_many(old, [ident(3).key])[ident(3).key]
        == store.get_many(old, [ident(3).key, ident(4).key])[ident(3).key]
    )
    with store.lock():
        store.prune(1)
    assert store.version(old.number) is None
    with pytest.raises(StoreError, match="no longer kept"):
        list(store.scan(old))
    with pytest.raises(StoreError, match="no longer kept"):
        store.get_many(old, [ident(3).key])


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(7, b"a\x00\xff\t", "digest")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "abc", "!!!", cursor.encode()[:-3], "eyJ4IjoxfQ"):
        with pytest.raises(CursorError):
            Cursor.decode(bad)


# --- the commands -----------------------------------------------------------


def page(*args: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = run_cli("list", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return [json.loads(x) for x in result.stdout.splitlines()], json.loads(lines[0])


def test_list_pages_to_the_end_through_one_version_while_a_run_publishes(tmp_path: Path) -> None:
    store = make_store(tmp_path, count=25)
    root = tmp_path / "store"
    first, info = page("--store", root, "--limit", "10", "--where", "n gte 3")
    assert info["count"] == 10 and info["has_next"] and info["version"] == 1
    # Another run publishes: every profile changes, some go, others come.
    commit_profiles(store, "r2", {ident(n): {"n": 1000 + n} for n in range(20, 40)})
    second, info2 = page("--store", root, "--limit", "10", "--where", "n gte 3", "--cursor",
                         info["next_cursor"])  # fmt: skip
    third, info3 = page("--store", root, "--limit", "10", "--where", "n gte 3", "--cursor",
                        info2["next_cursor"])  # fmt: skip
    assert info2["has_next"] and not info3["has_next"] and info3["next_cursor"] is None
    assert info3["count"] == 2 and info2["version"] == info3["version"] == 1
    old = store.version(1)
    assert old is not None
    in_version_1 = [json.loads(r) for _, r in store.scan(old)]
    assert first + second + third == [p for p in in_version_1 if p["user_profile"]["n"] >= 3]
    # Without a cursor, the new version (the run rewrote every bucket with its 20).
    fresh, fresh_info = page("--store", root, "--limit", "100")
    assert fresh_info["version"] == 2 and not fresh_info["has_next"]
    assert sorted(p["user_profile"]["n"] for p in fresh) == list(range(1020, 1040))


def test_a_page_that_ends_exactly_at_the_limit_says_there_is_no_next(tmp_path: Path) -> None:
    make_store(tmp_path, count=6)
    rows, info = page("--store", tmp_path / "store", "--limit", "6")
    assert len(rows) == 6 and info == {
        "count": 6,
        "has_next": False,
        "next_cursor": None,
        "version": 1,
    }


def test_list_with_properties_and_filters(tmp_path: Path) -> None:
    make_store(tmp_path, count=30)
    rows, _ = page(
        "--store",
        tmp_path / "store",
        "--where",
        'city in ["Paris","Oslo"]',
        "--where",
        "even eq true",
        "--properties",
        "city,missing",
    )
    assert rows and all(r["user_profile"]["city"] in ("Paris", "Oslo") for r in rows)
    assert all(set(r["user_profile"]) == {"city"} for r in rows)
    assert all({"created_at", "last_modified_at"} <= set(r) for r in rows)
    assert len(rows) == sum(1 for n in range(30) if n % 2 == 0 and n % 3 != 1)


def test_a_cursor_after_prune_fails_clearly(tmp_path: Path) -> None:
    store = make_store(tmp_path, count=10)
    root = tmp_path / "store"
    _, info = page("--store", root, "--limit", "3")
    commit_profiles(store, "r2", {ident(1): {"n": 1}})
    assert run_cli("prune", "--store", root, "--keep", "1").returncode == 0
    result = run_cli("list", "--store", root, "--cursor", info["next_cursor"])
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "profile-import: error: the cursor's store version 1 is no longer kept (pruned); "
        "start the listing again without --cursor\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "age like 1"], "unknown operator 'like'"),
        (["--where", "age eq x"], "the value must be JSON"),
        (["--properties", "a..b"], "names joined by dots"),
        (["--cursor", "garbage"], "--cursor is not a cursor"),
        (["--limit", "0"], "must be 1 or more"),
    ],
)
def test_list_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    make_store(tmp_path, count=3)
    result = run_cli("list", "--store", tmp_path / "store", *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 or "usage:" in result.stderr


def test_a_cursor_with_other_filters_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path, count=10)
    _, info = page("--store", tmp_path / "store", "--limit", "2", "--where", "n gte 1")
    result = run_cli("list", "--store", tmp_path / "store", "--cursor", info["next_cursor"])
    assert result.returncode == 2
    assert result.stderr == (
        "profile-import: error: --cursor was made for other --where filters; give the same ones\n"
    )


def test_list_on_an_empty_or_missing_store(tmp_path: Path) -> None:
    result = run_cli("list", "--store", tmp_path / "nothing")
    assert result.returncode == 1 and "no profile store" in result.stderr


def test_get_ids_in_the_order_asked_with_missing_and_duplicates(tmp_path: Path) -> None:
    make_store(tmp_path, count=30)
    ids = tmp_path / "ids.ndjson"
    ids.write_text(
        "\n".join(
            [
                json.dumps({"user_agent_id": "ua-29"}),
                json.dumps({"compartment_id": 1000, "user_account_id": "acct-0"}),
                json.dumps({"email_hash": "absent"}),
                "",
                json.dumps({"email_hash": "h0001"}),
                json.dumps({"user_agent_id": "ua-29"}),
                json.dumps({"compartment_id": "1000", "user_account_id": "acct-0"}),
            ]
        )
        + "\n"
    )
    result = run_cli("get", "--store", tmp_path / "store", "--ids", ids)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["user_profile"]["n"] for r in rows] == [29, 0, 1]
    assert json.loads(result.stderr) == {
        "version": 1,
        "asked": 6,
        "found": 3,
        "missing": 1,
        "duplicates": 2,
    }
    projected = run_cli(
        "get", "--store", tmp_path / "store", "--ids", ids, "--properties", "city"
    ).stdout.splitlines()
    assert [json.loads(x)["user_profile"] for x in projected] == [
        {"city": "Oslo"},
        {"city": "Paris"},
        {"city": "Lyon"},
    ]


def test_get_ids_from_stdin(tmp_path: Path) -> None:
    import subprocess

    from ..helpers import CLI

    make_store(tmp_path, count=5)
    result = subprocess.run(
        [*CLI, "get", "--store", str(tmp_path / "store"), "--ids", "-"],
        input=b'{"email_hash":"h0004"}\r\n',
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["email_hash"] == "h0004"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "line 2: not valid JSON"),
        ("[1]", "line 2: an identifier is a JSON object, not array"),
        ('{"email_hash": "x", "n": 1}', "line 2: unknown field 'n'"),
        ('{"email_hash": ""}', "line 2: email_hash is an empty string"),
        ('{"user_account_id": "a"}', "line 2: user_account_id without compartment_id"),
        ('{"email_hash": "x", "user_agent_id": "y"}', "line 2: more than one identifier"),
        ("{}", "line 2: no identifier"),
    ],
)
def test_get_ids_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    make_store(tmp_path, count=3)
    ids = tmp_path / "ids.ndjson"
    ids.write_text('{"email_hash": "h0001"}\n' + line + "\n")
    result = run_cli("get", "--store", tmp_path / "store", "--ids", ids)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"profile-import: error: --ids {ids}: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_get_ids_usage(tmp_path: Path) -> None:
    make_store(tmp_path, count=3)
    store = tmp_path / "store"
    both = run_cli("get", "--store", store, "--ids", "-", "--email-hash", "x")
    assert both.returncode == 2 and "cannot be combined" in both.stderr
    alone = run_cli("get", "--store", store, "--email-hash", "x", "--properties", "a")
    assert alone.returncode == 2 and "--properties goes with --ids" in alone.stderr
    missing = run_cli("get", "--store", store, "--ids", tmp_path / "none.ndjson")
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
