"""`profile-import export`: the store's profiles as NDJSON or Parquet.

Both stream: records go out as the store's sorted merge yields them, Parquet
in row groups of `ROWS_PER_GROUP`, so a store never has to fit in memory.
`--output` is written as a run's outputs are (`transforms.steps.outputs`): a file
or an object appears whole or not at all, so a damaged store found midway
never leaves half an export.

Parquet has a fixed schema, whatever the rows: NDJSON readers that guess a
schema from a sample (DuckDB's `read_json`) drop the identifier columns that
the sample did not show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Any

import orjson

from profile_import.core.identifiers import IDENTIFIER_FIELDS
from profile_import.stores import StoreError

FORMATS = ("ndjson", "parquet")
ROWS_PER_GROUP = 65_536
TIMESTAMP_FIELDS = ("created_at", "last_modified_at")


def parquet_schema() -> Any:
    import pyarrow as pa  # a Beam dependency; imported only when asked for

    timestamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            *(pa.field(name, pa.string()) for name in IDENTIFIER_FIELDS),
            pa.field("user_profile", pa.string(), nullable=False),  # JSON text
            pa.field("created_at", timestamp, nullable=False),
            pa.field("last_modified_at", timestamp, nullable=False),
        ]
    )


def write_ndjson(records: Iterable[bytes], out: IO[bytes]) -> int:
    count = 0
    for record in records:
        out.write(record)
        out.write(b"\n")
        count += 1
    return count


def write_parquet(
    records: Iterable[bytes], out: IO[bytes], rows_per_group: int = ROWS_PER_GROUP
) -> int:
    """Writes `records` (export records, JSON) as Parquet; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        for record in records:
            obj = orjson.loads(record)
            for name in IDENTIFIER_FIELDS:
                columns[name].append(obj.get(name))
            columns["user_profile"].append(orjson.dumps(obj["user_profile"]).decode())
            for name in TIMESTAMP_FIELDS:
                columns[name].append(obj[name])
            count += 1
            if len(columns["user_profile"]) == rows_per_group:
                writer.write_batch(_batch(pa, schema, columns))
                columns = {name: [] for name in schema.names}
        if columns["user_profile"] or count == 0:
            writer.write_batch(_batch(pa, schema, columns))
    return count


def _batch(pa: Any, schema: Any, columns: dict[str, list[Any]]) -> Any:
    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.name in TIMESTAMP_FIELDS:
            try:
                arrays.append(pa.array(values, pa.string()).cast(field.type))
            except pa.ArrowInvalid as e:
                raise StoreError(f"a stored {field.name} is not an ISO 8601 time: {e}") from e
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def record_batch(schema: Any, columns: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    return _batch(pa, schema, columns)
