"""The pipeline equals a plain sequential fold of the same commands.

Random command sequences (interleaved users, all three merge modes, deletes,
integer and string identifiers, malformed lines) are cut into several files,
each read in many small splits over a few buckets, and imported in two runs.
A dict and a for-loop over the same lines, using nothing but the merge rules,
must end with exactly the profiles the store exports.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_import.core.merge import upsert
from profile_import.pipelines import forked_workers
from profile_import.runners import runner_choice
from profile_import.runners.execution import Execution, RunSettings
from profile_import.stores import history_of, open_store, snapshot

from ..helpers import PORTABLE

pytestmark = [pytest.mark.spec(section=2), pytest.mark.spec(section=4)]

IDENTIFIERS: list[dict[str, Any]] = [
    {"compartment_id": "1000", "user_account_id": "u1"},
    {"compartment_id": 1000, "user_account_id": "u1"},  # the same user as above
    {"compartment_id": "1001", "user_account_id": "u1"},
    {"user_account_id": 7},  # with the run's default compartment
    {"email_hash": "h1"},
    {"email_hash": "h2"},
    {"user_agent_id": "vec:1"},
]
DEFAULT_COMPARTMENT = "1000"

values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"]),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("pq"), inner, max_size=2)
    ),
    max_leaves=5,
)
profiles = st.dictionaries(st.sampled_from("abc"), values, max_size=3)


@st.composite
def commands(draw: st.DrawFn) -> str:
    ident = draw(st.sampled_from(IDENTIFIERS))
    kind = draw(
        st.sampled_from(["replace", "shallow", "shallow-explicit", "deep", "delete", "bad"])
    )
    if kind == "bad":
        return draw(
            st.sampled_from(['{"operation":"UPSERT"', "[]", '{"operation":"DELETE"}', "  "])
        )
    if kind == "delete":
        return json.dumps({"operation": "DELETE", **ident})
    line: dict[str, Any] = {"operation": "UPSERT", **ident, "force_replace": kind == "replace"}
    if kind == "shallow-explicit":
        line["merge_objects"] = False
    elif kind == "deep" or (kind == "replace" and draw(st.booleans())):
        line["merge_objects"] = True
    line["user_profile"] = draw(profiles)
    return json.dumps(line)


def identity(obj: dict[str, Any]) -> tuple[str, ...]:
    if "email_hash" in obj:
        return ("email_hash", obj["email_hash"])
    if "user_agent_id" in obj:
        return ("user_agent_id", obj["user_agent_id"])
    return (
        "account",
        str(obj.get("compartment_id", DEFAULT_COMPARTMENT)),
        str(obj["user_account_id"]),
    )


def sequential_fold(state: dict[tuple[str, ...], Any], lines: list[str]) -> None:
    """The reference: one line after another, into a dict."""
    for line in lines:
        if not applies(line):
            continue
        obj = orjson.loads(line)
        who = identity(obj)
        if obj["operation"] == "DELETE":
            state.pop(who, None)
        else:
            state[who] = upsert(
                state.get(who),
                obj["user_profile"],
                force_replace=obj["force_replace"],
                merge_objects=obj.get("merge_objects", False),
            )


def import_run(
    folder: Path,
    store: Path | str,
    name: str,
    lines: list[str],
    files: int,
    split_bytes: int,
    spill: bool,
    beam_args: tuple[str, ...] = ("--direct_num_workers=1",),
) -> dict[str, Any]:
    paths = []
    size = max(1, -(-len(lines) // files))
    for i in range(files):
        path = folder / f"{name}-{i}.ndjson"
        path.write_text("".join(x + "\n" for x in lines[i * size : (i + 1) * size]))
        paths.append(str(path))
    settings_ = RunSettings(
        inputs=paths,
        store=str(store),
        rejects_path=str(folder / f"{name}.rejects.ndjson"),
        default_compartment_id=DEFAULT_COMPARTMENT,
        split_bytes=split_bytes,
        buckets=3,
        allow_reapply=True,
        beam_args=list(beam_args),
        spill=spill,
    )
    outcome = Execution(settings_).run()
    assert outcome.exit_code == 0, outcome.report["message"]
    # Every rejected line, and only those, is named by its file and number.
    expected = {
        (path, number)
        for i, path in enumerate(paths)
        for number, line in enumerate(lines[i * size : (i + 1) * size], 1)
        if line.strip() and not applies(line)
    }
    rejects = folder / f"{name}.rejects.ndjson"
    kept = rejects.read_bytes().splitlines() if rejects.exists() else []
    records = [orjson.loads(x) for x in kept]
    assert sorted((r["file"], r["line"]) for r in records) == sorted(expected)
    return outcome.report


def applies(line: str) -> bool:
    """Whether the reference applies a line (`sequential_fold`), rather than rejecting it."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and any(
        k in obj for k in ("email_hash", "user_agent_id", "user_account_id")
    )


def exported(store: Path | str) -> dict[tuple[str, ...], Any]:
    records = open_store(str(store)).export()
    return {identity(obj): obj["user_profile"] for obj in map(orjson.loads, records)}


# Two imports of random commands, cut into 1-3 files read in splits of 1 byte
# to 1 MiB; `spill`: batches through files, or inline through Beam's shuffle.
TWO_RUNS = {
    "first": st.lists(commands(), max_size=40),
    "second": st.lists(commands(), max_size=40),
    "files": st.integers(1, 3),
    "split_bytes": st.sampled_from([1, 90, 400, 1 << 20]),
    "spill": st.booleans(),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS)
def test_pipeline_equals_sequential_fold(
    first: list[str], second: list[str], files: int, split_bytes: int, spill: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_two_runs(Path(tmp), Path(tmp) / "store", first, second, files, split_bytes, spill)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS)
def test_pipeline_equals_sequential_fold_on_sqlite(
    first: list[str], second: list[str], files: int, split_bytes: int, spill: bool
) -> None:
    """The SQLite store reads only the touched profiles and stages only changes:
    the result must still be the whole sequential fold."""
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'p.db'}"
        check_two_runs(Path(tmp), store, first, second, files, split_bytes, spill)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS)
def test_pipeline_equals_sequential_fold_on_postgresql(
    postgres: str, first: list[str], second: list[str], files: int, split_bytes: int, spill: bool
) -> None:
    """The same on PostgreSQL (jsonb, COPY staging, the merge transaction)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = f"postgresql:///{postgres}?table=p_{uuid.uuid4().hex[:12]}"
        check_two_runs(Path(tmp), store, first, second, files, split_bytes, spill)


def runner_of(beam_args: tuple[str, ...]) -> str:
    if PORTABLE[0] in beam_args:
        return "PortableRunner"
    return "InProcess" if not beam_args or IN_PROCESS in beam_args else "FnApiRunner"


def check_two_runs(
    folder: Path,
    store: Path | str,
    first: list[str],
    second: list[str],
    files: int,
    split_bytes: int,
    spill: bool,
    beam_args: tuple[str, ...] = ("--direct_num_workers=1",),
) -> None:
    """Two runs into `store`, each checked against the sequential fold."""
    expected: dict[tuple[str, ...], Any] = {}

    report = import_run(folder, store, "first", first, files, split_bytes, spill, beam_args)
    sequential_fold(expected, first)
    assert exported(store) == expected
    assert report["counts"]["profiles_created"] == len(expected)
    assert report["runner"] == runner_of(beam_args)

    before = dict(expected)
    report = import_run(folder, store, "second", second, files, split_bytes, spill, beam_args)
    sequential_fold(expected, second)
    assert exported(store) == expected
    counts = report["counts"]
    assert len(before) + counts["profiles_created"] - counts["profiles_deleted"] == len(expected)
    assert counts["lines"] == counts["blank"] + counts["accepted"] + counts["rejected"]


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(st.lists(commands(), max_size=30), min_size=3, max_size=4),
    compact_after=st.none() | st.integers(1, 2),
    fraction=st.sampled_from([snapshot.COMPACT_FRACTION, 1e9]),
)
def test_imports_in_a_row_equal_sequential_fold_with_deltas_and_compaction(
    runs: list[list[str]], compact_after: int | None, fraction: float
) -> None:
    """The folder store writes each run's changes as delta segments over the
    buckets' bases (rewriting a bucket past a size limit, or always with
    `fraction` huge never by size), and `compact` folds them: several imports
    in a row, with or without a compaction between them, still export the fold."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(snapshot, "COMPACT_FRACTION", fraction),
    ):
        folder, store = Path(tmp), Path(tmp) / "store"
        expected: dict[tuple[str, ...], Any] = {}
        for n, lines in enumerate(runs):
            import_run(folder, store, f"run{n}", lines, 1, 1 << 20, False)
            sequential_fold(expected, lines)
            assert exported(store) == expected
            if n == compact_after:
                opened = open_store(str(store))
                with opened.lock():
                    history_of(opened, "compact").compact()
                assert exported(store) == expected
        verification = open_store(str(store)).verify()
        assert verification.sound and verification.lines == len(expected)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(commands(), max_size=30),
    second=st.lists(commands(), max_size=30),
    files=st.integers(1, 3),
    split_bytes=st.sampled_from([1, 90, 1 << 20]),
)
def test_pipeline_equals_sequential_fold_on_the_portable_runner(
    first: list[str], second: list[str], files: int, split_bytes: int
) -> None:
    """The job-submission path Flink and Spark take, with an embedded job service."""
    with tempfile.TemporaryDirectory() as tmp:
        check_two_runs(
            Path(tmp), Path(tmp) / "store", first, second, files, split_bytes, False, PORTABLE
        )


IN_PROCESS = "--runner=InProcess"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS)
def test_in_process_run_equals_sequential_fold(
    first: list[str], second: list[str], files: int, split_bytes: int, spill: bool
) -> None:
    """A small import runs in this process by default (`pipelines.in_process`):
    the same result as the fold, whatever its inputs (splits do not apply)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        check_two_runs(Path(tmp), store, first, second, files, split_bytes, spill, ())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS, workers=st.integers(2, 4))
def test_in_process_run_in_workers_equals_sequential_fold(
    first: list[str], second: list[str], files: int, split_bytes: int, spill: bool, workers: int
) -> None:
    """With the inputs cut in ranges that forked workers claim one at a time
    and number once all are checked (`forked_workers.Crew`), whatever the
    files, the number of workers and where the cuts fall."""
    forks: list[int] = []

    class Counted(forked_workers.Workers):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            forks.append(len(self.processes))

    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(runner_choice, "PARALLEL_MIN_BYTES", 1),
        mock.patch.object(runner_choice, "usable_cores", lambda: workers),
        mock.patch.object(forked_workers, "Workers", Counted),
    ):
        store = Path(tmp) / "store"
        check_two_runs(Path(tmp), store, first, second, files, split_bytes, spill, ())
    assert bool(forks) == bool(first or second)


# The database stores in-process, in forked workers whatever the size: each
# worker opens its own connection, reads and stages its buckets.
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**TWO_RUNS)
def test_in_process_workers_equal_sequential_fold_on_databases(
    request: pytest.FixtureRequest,
    database: str,
    first: list[str],
    second: list[str],
    files: int,
    split_bytes: int,
    spill: bool,
) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(runner_choice, "PARALLEL_MIN_BYTES", 1),
    ):
        store = (
            f"sqlite:///{Path(tmp) / 'p.db'}"
            if database == "sqlite"
            else f"postgresql:///{request.getfixturevalue('postgres')}"
            f"?table=p_{uuid.uuid4().hex[:12]}"
        )
        check_two_runs(Path(tmp), store, first, second, files, split_bytes, spill, (IN_PROCESS,))
