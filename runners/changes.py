"""`profile-import changes --since V`: the net changes since a store version (SPEC §6).

The store reads its change records after `V` and the current state of only
the profiles they name (`StoreReader.changed_since`), all before a byte is
written: an answer the store cannot give whole (a version pruned, not
published yet) is an error, never a partial answer. The changes go out by
identifier, as NDJSON or Parquet (`--output` written whole or not at all, as
`export`'s), then one JSON line on standard error with the current version,
the `--since` of the next call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from profile_import.core.changes import KINDS, change_line, fold_records, net_changes
from profile_import.core.identifiers import IDENTIFIER_FIELDS
from profile_import.stores.base import StoreReader

from . import export


@dataclass
class Feed:
    """The changes since a version: iterate it for the NDJSON lines, then read `info`."""

    store: StoreReader
    since: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        read = self.store.changed_since(self.since)
        self._changes = list(net_changes(fold_records(read.records), read.now))
        counts = Counter(kind for kind, *_ in self._changes)
        self.info = {
            "since": self.since,
            "version": read.current,
            "changes": len(self._changes),
            **{kind: counts[kind] for kind in KINDS},
        }

    def __iter__(self) -> Iterator[bytes]:
        for kind, version, key, record in self._changes:
            yield change_line(kind, version, key, record)[:-1]


def parquet_schema() -> Any:
    import pyarrow as pa  # a Beam dependency; imported only when asked for

    timestamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            pa.field("change", pa.string(), nullable=False),
            pa.field("version", pa.int64(), nullable=False),
            *(pa.field(name, pa.string()) for name in IDENTIFIER_FIELDS),
            pa.field("user_profile", pa.string()),  # JSON text; null for a deletion
            pa.field("created_at", timestamp),
            pa.field("last_modified_at", timestamp),
        ]
    )


def write_parquet(feed: Feed, out: IO[bytes]) -> int:
    """Writes the feed's changes as Parquet."""
    import pyarrow.parquet as pq

    schema = parquet_schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for line in feed:
        obj = orjson.loads(line)
        for name in schema.names:
            value = obj.get(name)
            if name == "user_profile" and value is not None:
                value = orjson.dumps(value).decode()
            columns[name].append(value)
    with pq.ParquetWriter(out, schema) as writer:
        writer.write_batch(export.record_batch(schema, columns))
    return len(columns["change"])
