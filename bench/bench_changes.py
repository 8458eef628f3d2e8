"""Times `changes --since` the last version after a small import onto a big
folder store, against that import's own `get --ids` of its changed profiles
and against an `export` of the store.

    .venv/bin/python bench/bench_changes.py [--profiles 1100000] [--lines 10000] [--out bench/out]

The big store is `bench_delta.py`'s (N profiles shaped like
`shared/bench/gen_commands.py`'s users 0..N-1, 64 buckets, built once and
kept in `--out`); each measure runs on a copy. `--imports` imports of
`bench.generate_commands(LINES, seed=11.., users=N)` go onto it in a row;
then, `--repeat` times each, one CLI subprocess (default runner, wall time
with start-up): `changes --since` the version before the last import, the
last import's changed profiles read back by `get --ids` (their identifiers
taken from the changes' output), `changes --since` the version before all the
imports, and `export`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import generate_commands  # the scripts beside this one (see pyproject's mypy_path)
from bench_delta import big_store
from profile_import.core.identifiers import IDENTIFIER_FIELDS
from profile_import.stores.snapshot import SnapshotStore

CLI = [sys.executable, "-m", "profile_import.runners.cli"]


def timed(*args: str | Path) -> tuple[float, bytes, bytes]:
    """(wall seconds, stdout, stderr) of one CLI subprocess."""
    started = time.perf_counter()
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, check=True, timeout=3600)
    return time.perf_counter() - started, done.stdout, done.stderr


def current_version(store: Path) -> int:
    version = SnapshotStore(str(store)).current()
    assert version is not None
    return version.number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_100_000)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--imports", type=int, default=3, help="imports in a row onto the store")
    parser.add_argument("--repeat", type=int, default=3, help="times each command runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    template = big_store(args.out, args.profiles)
    work = args.out / "changes-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    store = work / "store"
    shutil.copytree(template, store)
    first = current_version(store)
    for n in range(args.imports):
        path = args.out / f"delta-commands-{args.lines}-seed{11 + n}-users{args.profiles}.ndjson"
        if not path.exists():
            generate_commands(args.lines, path, seed=11 + n, users=args.profiles)
        wall, _, _ = timed("run", "--quiet", "--store", store, "--report", work / "r.json", path)
        print(f"import #{n + 1}: {wall:.2f} s", flush=True)
    last = current_version(store)
    report = json.loads((work / "r.json").read_text())["counts"]
    changed = sum(report[f"profiles_{k}"] for k in ("created", "updated", "deleted"))

    # The last import's changed profiles, by identifier: what `get --ids` asks.
    _, out, _ = timed("changes", "--store", store, "--since", str(last - 1))
    ids = work / "ids.ndjson"
    ids.write_bytes(
        b"".join(
            json.dumps(
                {k: v for k, v in json.loads(line).items() if k in IDENTIFIER_FIELDS}
            ).encode()
            + b"\n"
            for line in out.splitlines()
        )
    )
    rows: list[tuple[str, tuple[str | Path, ...]]] = [
        (f"`changes --since {last - 1}` (the last import)", ("changes", "--since", str(last - 1))),
        ("`get --ids` of its changed profiles", ("get", "--ids", ids)),
        (
            f"`changes --since {first}` (all {args.imports} imports)",
            ("changes", "--since", str(first)),
        ),
        ("`export`", ("export",)),
    ]
    print(
        f"store: {args.profiles:,} profiles; {args.imports} imports of {args.lines:,} lines; "
        f"the last changed {changed:,} profiles"
    )
    print("| command | wall s (each run) | median | lines out |")
    print("|---|---|---:|---:|")
    for title, command in rows:
        walls = []
        for _ in range(args.repeat):
            wall, out, _ = timed(command[0], "--store", store, *command[1:])
            walls.append(wall)
        each = " / ".join(f"{w:.2f}" for w in walls)
        lines = out.count(b"\n")
        print(f"| {title} | {each} | {statistics.median(walls):.2f} | {lines:,} |", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
