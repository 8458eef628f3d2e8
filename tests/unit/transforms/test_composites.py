"""The Beam composites, each on a real local runner with TestPipeline + assert_that."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from profile_import.core import records
from profile_import.core.commands import CheckSettings
from profile_import.core.fold import StoredProfile, kind_of
from profile_import.core.idempotency import ALREADY_APPLIED, AppliedInput, InputDecision
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores.snapshot import SnapshotStore
from profile_import.transforms.apply_commands import ApplyCommands
from profile_import.transforms.parse_commands import ParseCommands
from profile_import.transforms.steps import batches, metrics
from profile_import.transforms.steps.decisions import Decided
from profile_import.transforms.write_rejects import WriteRejects

from ...helpers import plan, write_lines

BUCKETS = 4
NOW = "2026-11-23T00:00:00.000Z"


def pipeline() -> TestPipeline:
    return TestPipeline(runner=FnApiRunner())


def counters(result: Any) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    out: dict[str, int] = {}
    for c in query["counters"]:
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + c.committed
    return out


def decoded(elements: Iterable[tuple[int, batches.CommandBatch]]) -> list[tuple[int, str]]:
    """(bucket, email hash) of every command, in input order within its bucket."""
    out = []
    for bucket, batch in elements:
        for key, kind, content in batches.lines_in_input_order([batch]):
            assert bucket == bucket_of(key, BUCKETS)
            command = orjson.loads(content)
            assert kind == kind_of(command["operation"], command.get("force_replace"))
            assert Identifier.from_key(key).values[0] == command["email_hash"]
            out.append((bucket, command["email_hash"]))
    return sorted(out)


LINES: list[str | dict[str, Any]] = [
    {"operation": "UPSERT", "email_hash": "h1", "force_replace": True, "user_profile": {"a": 1}},
    "",
    "{broken",
    {"operation": "DELETE", "email_hash": "h2"},
    {"operation": "UPSERT", "email_hash": "h3", "force_replace": True, "user_profile": {}, "x": 1},
    {"operation": "UPSERT", "email_hash": "h1", "force_replace": False, "user_profile": {"b": 2}},
    {"operation": "UPSERT", "user_agent_id": "", "force_replace": True, "user_profile": {}},
]


@pytest.mark.parametrize("split_bytes", [1, 64, 1 << 20])
@pytest.mark.parametrize("spill", [False, True])
def test_parse_commands_routes_good_and_rejected_lines(
    tmp_path: Path, split_bytes: int, spill: bool
) -> None:
    path = str(write_lines(tmp_path / "a.ndjson", LINES))
    files, splits = plan([path], split_bytes=split_bytes)
    spill_dir = str(tmp_path / "spill") if spill else None
    p = pipeline()
    parsed = p | beam.Create(splits) | ParseCommands(CheckSettings(), BUCKETS, spill_dir=spill_dir)

    want_commands = sorted(
        (bucket_of(Identifier.email_hash(h).key, BUCKETS), h) for h in ("h1", "h2", "h1")
    )

    def check_commands(actual: list[tuple[int, batches.CommandBatch]]) -> None:
        if decoded(actual) != want_commands:
            raise BeamAssertException(f"{decoded(actual)} != {want_commands}")
        if spill and any(not b[3] or b[2] for _, b in actual):
            raise BeamAssertException("payloads should have been spilled")

    def reject_lines(element: tuple[tuple[int, int], bytes]) -> list[tuple[int, str, str]]:
        return [
            (r["line"], r["code"], r["raw"])
            for r in map(json.loads, element[1].decode().splitlines())
        ]

    assert_that(parsed.commands, check_commands, label="CheckCommands")
    assert_that(
        parsed.rejects | beam.FlatMap(reject_lines),
        equal_to(
            [
                (3, "INVALID_JSON", "{broken"),
                (5, "UNKNOWN_FIELD", json.dumps(LINES[4])),
                (7, "INVALID_IDENTIFIER", json.dumps(LINES[6])),
            ]
        ),
        label="CheckRejects",
    )
    # The counts come as data too, per input: what the final step checks.
    assert_that(
        parsed.counts | beam.CombinePerKey(sum_counts),
        equal_to(
            [
                (
                    0,
                    {
                        "lines": 7,
                        "blank": 1,
                        "accepted": 3,
                        "rejected": 3,
                        "upserts": 2,
                        "deletes": 1,
                        "rejected.INVALID_JSON": 1,
                        "rejected.UNKNOWN_FIELD": 1,
                        "rejected.INVALID_IDENTIFIER": 1,
                    },
                )
            ]
        ),
        label="CheckCounts",
    )
    result = p.run()
    result.wait_until_finish()
    got = counters(result)
    assert {
        k: got[k] for k in ("lines", "blank", "accepted", "rejected", "upserts", "deletes")
    } == {"lines": 7, "blank": 1, "accepted": 3, "rejected": 3, "upserts": 2, "deletes": 1}
    assert got["rejected.INVALID_JSON"] == 1
    assert files[0].lines == 7


def sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for name, value in one.items():
            total[name] = total.get(name, 0) + value
    return total


def _batch(lines: list[dict[str, Any]], first_line: int) -> tuple[int, batches.CommandBatch]:
    keys = [Identifier.email_hash(x["email_hash"]).key for x in lines]
    kinds = bytes(kind_of(x["operation"], x.get("force_replace")) for x in lines)
    bucket = bucket_of(keys[0], BUCKETS)
    return bucket, batches.encode(0, first_line, keys, kinds, list(map(orjson.dumps, lines)))


def test_apply_commands_applies_batches_in_input_order(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "store"), buckets=BUCKETS)
    h = Identifier.email_hash("h")
    bucket = bucket_of(h.key, BUCKETS)
    first = store.begin("seed", None)
    first.sink.write_bucket(
        bucket, [records.encode(h.key, StoredProfile({"tags": ["s"]}, NOW, NOW))]
    )
    store.commit(first, {"fingerprint": "seed"}, 1, 1, ["seed"])

    up = {"operation": "UPSERT", "email_hash": "h", "force_replace": False, "merge_objects": True}
    # Given out of order: the later split first. Order must come from the sequence.
    elements = [
        _batch([{**up, "user_profile": {"tags": ["c"]}}], first_line=10),
        _batch(
            [{**up, "user_profile": {"tags": ["a"]}}, {**up, "user_profile": {"tags": ["b"]}}], 2
        ),
        _batch([{"operation": "DELETE", "email_hash": "gone"}], first_line=5),
    ]
    staging = store.begin("run", store.current())
    p = pipeline()
    out = (
        p
        | beam.Create(elements, reshuffle=False)
        | ApplyCommands(staging.source, staging.sink, "2026-11-24T00:00:00.000Z")
    )
    gone_bucket = bucket_of(Identifier.email_hash("gone").key, BUCKETS)
    want = [(bucket, 1)] + ([(gone_bucket, 0)] if gone_bucket != bucket else [])
    assert_that(out | beam.MapTuple(lambda b, r: (b, r["profiles"])), equal_to(want))
    assert_that(
        out | beam.Values() | beam.Map(lambda r: r["commands_applied"]) | beam.CombineGlobally(sum),
        equal_to([4]),
        label="AppliedAsData",
    )
    result = p.run()
    result.wait_until_finish()
    got = counters(result)
    assert got["commands_applied"] == 4 and got["profiles_updated"] == 1
    assert got["deletes_missing"] == 1 and got.get("profiles_created", 0) == 0
    store.commit(staging, {"fingerprint": "run"}, 0, got["buckets_written"], ["run"])
    profile = json.loads(store.get(h) or b"")
    assert profile["user_profile"] == {"tags": ["s", "a", "b", "c"]}
    assert (
        profile["created_at"] == NOW and profile["last_modified_at"] == "2026-11-24T00:00:00.000Z"
    )


def test_apply_commands_dry_run_writes_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "store"), buckets=BUCKETS)
    p = pipeline()
    line = {"operation": "UPSERT", "email_hash": "n", "force_replace": True, "user_profile": {}}
    out = p | beam.Create([_batch([line], 1)]) | ApplyCommands(store.source(None), None, NOW)
    assert_that(
        out | beam.MapTuple(lambda b, r: (b, r["profiles"], r["buckets_written"])),
        equal_to([(bucket_of(Identifier.email_hash("n").key, BUCKETS), 1, 0)]),
    )
    p.run().wait_until_finish()
    assert not (tmp_path / "store").exists()


def test_write_rejects_writes_one_file_per_split(tmp_path: Path) -> None:
    p = pipeline()
    elements = [((0, 1), b'{"line":1}\n'), ((1, 30), b'{"line":30}\n{"line":31}\n')]
    out = p | beam.Create(elements) | WriteRejects(str(tmp_path / "rejects"))
    assert_that(
        out | beam.Map(lambda f: (f.input_index, f.first_line, Path(f.path).name, f.rejects)),
        equal_to(
            [
                (0, 1, "rejects-000000-000000000001.ndjson", 1),
                (1, 30, "rejects-000001-000000000030.ndjson", 2),
            ]
        ),
    )
    p.run().wait_until_finish()
    assert (tmp_path / "rejects" / "rejects-000001-000000000030.ndjson").read_bytes() == elements[
        1
    ][1]


def test_parse_commands_reads_no_split_of_a_skipped_input(tmp_path: Path) -> None:
    """What DecideInputs decided: an input the store applied before is not read
    at all, so an unchanged re-run parses and applies nothing."""
    line = {"operation": "UPSERT", "force_replace": True, "user_profile": {"v": 1}}
    kept = write_lines(tmp_path / "kept.ndjson", [{**line, "email_hash": "kept"}, "{oops"])
    skipped = write_lines(tmp_path / "skipped.ndjson", [{**line, "email_hash": "skipped"}, "{x"])
    hashes, splits = plan([str(kept), str(skipped)], split_bytes=20)
    assert {s.input_index for s in splits} == {0, 1}
    decided = Decided(
        tuple(hashes),
        (
            InputDecision(0, "fp-a"),
            InputDecision(1, "fp-b", ALREADY_APPLIED, AppliedInput("fp-b", "e", 1, NOW)),
        ),
    )
    p = pipeline()
    decisions = p | "Decided" >> beam.Create([decided])
    parsed = p | beam.Create(splits) | ParseCommands(CheckSettings(), BUCKETS, decided=decisions)
    assert_that(
        parsed.commands | beam.Map(lambda e: decoded([e])[0][1]),
        equal_to(["kept"]),
        label="OnlyKeptCommands",
    )
    assert_that(
        parsed.rejects | beam.Map(lambda e: e[0][0]), equal_to([0]), label="OnlyKeptRejects"
    )
    assert_that(
        parsed.counts | beam.Keys() | beam.Distinct(), equal_to([0]), label="OnlyKeptCounts"
    )
    p.run().wait_until_finish()
