"""The change feed against the store's own exports, on random imports (SPEC §6).

Several imports of random commands (`commands` in
tests/engines/test_equals_sequential_fold.py) in a row, each with `--changes`,
on every store. After each run: its changes by kind are its report's
`profiles_created`, `profiles_updated` and `profiles_deleted`, and the previous
version's export with the changes applied is the new version's export, record
for record. After the last run, `changes --since V` applied to
the export at `V` is the current export, for every `V` (a profile changed and
changed back is no net change: its `last_modified_at` alone may differ).
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_import.runners import runner_choice
from profile_import.runners.changes import Feed
from profile_import.runners.execution import Execution, RunSettings
from profile_import.stores import open_store

from ..engines.test_equals_sequential_fold import DEFAULT_COMPARTMENT, commands, identity
from ..object_servers import new_bucket

pytestmark = pytest.mark.spec(section=6)

Records = dict[tuple[str, ...], dict[str, Any]]
KIND_COUNTS = {"created": "profiles_created", "updated": "profiles_updated"}
KIND_COUNTS["deleted"] = "profiles_deleted"
ONE_BEAM_WORKER = ("--direct_num_workers=1",)


def exported(store: str) -> Records:
    """The store's current export, by identity: each whole record."""
    return {identity(r): r for r in map(orjson.loads, open_store(store).export())}


def applied(before: Records, changes: list[dict[str, Any]]) -> Records:
    """`before` with `changes` applied, as a consumer would: a deletion removes
    the profile, any other change puts its record (the change less its two
    leading fields)."""
    after = dict(before)
    for change in changes:
        record = {k: v for k, v in change.items() if k not in ("change", "version")}
        if change["change"] == "deleted":
            assert after.pop(identity(record), None) is not None, change
        else:
            after[identity(record)] = record
    return after


def state(records: Records) -> dict[tuple[str, ...], Any]:
    """What a net change compares: each profile and its creation."""
    return {k: (r["user_profile"], r["created_at"]) for k, r in records.items()}


def import_with_changes(
    folder: Path, store: str, n: int, lines: list[str], beam_args: tuple[str, ...]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs one import with `--changes`: its report and its changes."""
    source = folder / f"run{n}.ndjson"
    source.write_text("".join(line + "\n" for line in lines))
    changes = folder / f"run{n}.changes.ndjson"
    outcome = Execution(
        RunSettings(
            inputs=[str(source)],
            store=store,
            rejects_path=str(folder / f"run{n}.rejects.ndjson"),
            changes_path=str(changes),
            default_compartment_id=DEFAULT_COMPARTMENT,
            buckets=3,
            allow_reapply=True,
            beam_args=list(beam_args),
        )
    ).run()
    assert outcome.exit_code == 0, outcome.report.get("changes_error") or outcome.report["message"]
    report = outcome.report
    assert report["changes_version"] == report["version"]
    assert (report["runner"] == "InProcess") == (not beam_args)
    return report, [orjson.loads(x) for x in changes.read_bytes().splitlines()]


def check_imports_in_a_row(
    folder: Path, store: str, runs: list[list[str]], beam_args: tuple[str, ...] = ()
) -> None:
    exports: dict[int, Records] = {0: {}}
    for n, lines in enumerate(runs, 1):
        report, changes = import_with_changes(folder, store, n, lines, beam_args)
        version = report["version"]
        assert version == n  # versions are numbered 1, 2, 3, ... in publish order
        # The run's changes by kind are its report's counts.
        by_kind = Counter(c["change"] for c in changes)
        for kind, count in KIND_COUNTS.items():
            assert by_kind[kind] == report["counts"][count], (kind, changes, report["counts"])
        assert {c["version"] for c in changes} <= {version}
        keys = [identity(c) for c in changes]
        assert len(set(keys)) == len(keys)  # one change a profile
        # Applied to the previous version's export, they give the new one's.
        exports[version] = exported(store)
        assert applied(exports[version - 1], changes) == exports[version]
        assert [identity(r) for r in exports[version].values() if identity(r) in set(keys)] == [
            k for k in keys if k in exports[version]
        ]  # the changes come in `export`'s order
    # The net changes since each version, applied to its export, give the current one.
    last = len(runs)
    current = exports[last]
    for since in range(last + 1):
        feed = Feed(open_store(store), since)
        changes = [orjson.loads(line) for line in feed]
        assert feed.info["version"] == last and feed.info["changes"] == len(changes)
        assert all(since < c["version"] <= last for c in changes)
        got = applied(exports[since], changes)
        assert state(got) == state(current), since
        # What the feed names, it gives as the profile stands now.
        assert all(
            got[identity(c)] == current[identity(c)] for c in changes if c["change"] != "deleted"
        )


RUNS = st.lists(st.lists(commands(), max_size=25), min_size=2, max_size=4)


def store_url(request: pytest.FixtureRequest, kind: str, folder: Path) -> str:
    """A new, empty store of `kind`, on the suite's own servers."""
    if kind.startswith("folder"):
        return str(folder / "store")
    if kind == "sqlite":
        return f"sqlite:///{folder / 'p.db'}"
    if kind == "postgresql":
        database = request.getfixturevalue("postgres")
        return f"postgresql:///{database}?table=p_{uuid.uuid4().hex[:12]}"
    request.getfixturevalue("s3_endpoint" if kind == "s3" else "gcs_endpoint")
    return f"{kind}://{new_bucket(kind)}/store"


# "folder, workers": the default engine's forked workers, whatever the size.
EXAMPLES = {"folder": 12, "folder, workers": 6, "sqlite": 8, "postgresql": 6, "s3": 4, "gs": 4}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_each_runs_changes_and_the_changes_since_each_version_rebuild_its_export(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """On every store, with the default engine (in process)."""

    @settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(runs=RUNS)
    def check(runs: list[list[str]]) -> None:
        workers = mock.patch.object(runner_choice, "PARALLEL_MIN_BYTES", 1)
        with (
            tempfile.TemporaryDirectory() as tmp,
            workers if kind.endswith("workers") else nullcontext(),
        ):
            check_imports_in_a_row(Path(tmp), store_url(request, kind, Path(tmp)), runs)

    check()


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(st.lists(commands(), max_size=20), min_size=2, max_size=3))
def test_the_changes_of_runs_on_beams_local_runner_rebuild_its_export(
    runs: list[list[str]],
) -> None:
    """The same through the Beam pipeline (the change files its apply step
    leaves, gathered by its final step), on the folder store."""
    with tempfile.TemporaryDirectory() as tmp:
        check_imports_in_a_row(Path(tmp), str(Path(tmp) / "store"), runs, ONE_BEAM_WORKER)
