"""`export`: NDJSON and Parquet, streamed, with a fixed Parquet schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from profile_import.core import records
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.runners.export import write_parquet
from profile_import.stores.snapshot import SnapshotStore

from ..helpers import read_cli

pytestmark = pytest.mark.spec(section=5)

T1, T2 = "2026-01-01T00:00:00.000Z", "2026-11-24T10:11:12.345Z"
PROFILES: dict[Identifier, dict[str, object]] = {
    Identifier.account("1000", "alice"): {"first_name": "Alice", "tags": ["a", {"b": None}]},
    Identifier.account("1001", "bob"): {},
    Identifier.email_hash("e" * 64): {"n": 1.5, "ok": True, "deep": {"x": {"y": [1, 2]}}},
    Identifier.user_agent_id("vec:42"): {"name": "Zoë \u2028 \t"},
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    store = SnapshotStore(str(root), buckets=4)
    staging = store.begin("r1", None)
    by_bucket: dict[int, list[bytes]] = {}
    for ident, profile in PROFILES.items():
        line = records.encode(ident.key, StoredProfile(profile, T1, T2))
        by_bucket.setdefault(bucket_of(ident.key, 4), []).append(line)
    for bucket, lines in by_bucket.items():
        staging.sink.write_bucket(bucket, sorted(lines))
    store.commit(staging, {"fingerprint": "f"}, len(PROFILES), len(by_bucket), ["f"])
    return root


def test_parquet_has_a_fixed_schema_and_every_value(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles.parquet"
    result = read_cli("export", "--store", store, "--format", "parquet", "--output", out)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    utc = pa.timestamp("us", tz="UTC")
    assert [(f.name, f.type, f.nullable) for f in table.schema] == [
        ("compartment_id", pa.string(), True),
        ("user_account_id", pa.string(), True),
        ("email_hash", pa.string(), True),
        ("user_agent_id", pa.string(), True),
        ("user_profile", pa.string(), False),
        ("created_at", utc, False),
        ("last_modified_at", utc, False),
    ]
    ndjson = read_cli("export", "--store", store).stdout.rstrip("\n").split("\n")  # not at U+2028
    rows = table.to_pylist()
    assert len(rows) == len(ndjson) == len(PROFILES)
    for row, line in zip(rows, ndjson, strict=True):
        record = json.loads(line)
        for name in ("compartment_id", "user_account_id", "email_hash", "user_agent_id"):
            assert row[name] == record.get(name)  # None where the record has no such field
        assert json.loads(row["user_profile"]) == record["user_profile"]
        assert row["created_at"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        assert row["last_modified_at"] == dt.datetime(2026, 11, 24, 10, 11, 12, 345000, dt.UTC)


def test_parquet_is_written_in_row_groups(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    source = SnapshotStore(str(store))
    with out.open("wb") as f:
        assert write_parquet(source.export(), f, rows_per_group=3) == 4
    assert pq.ParquetFile(out).metadata.num_row_groups == 2
    with out.open("wb") as f:
        assert write_parquet(iter([]), f) == 0
    assert pq.read_table(out).num_rows == 0 and len(pq.read_table(out).schema) == 7
