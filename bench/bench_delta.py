"""Times a small import onto a big folder store against the same import onto an
empty one, and what each writes into the store folder.

    .venv/bin/python bench/bench_delta.py [--profiles 1100000] [--lines 10000] [--out bench/out]

The big store (N profiles shaped like `shared/bench/gen_commands.py`'s users
0..N-1, 64 buckets) is written once through the store's own sink and commit
(`read_bench.build`) and kept in `--out`; each measure runs on a copy. The
imports are `bench.generate_commands(LINES, seed=11.., users=N)`: their users
are the store's. Each run is one CLI subprocess (default runner, every core),
wall time with start-up. Bytes are the store folder's file sizes summed
(`du -sb`), after minus before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import generate_commands  # the scripts beside this one (see pyproject's mypy_path)
from read_bench import build

CLI = [sys.executable, "-m", "profile_import.runners.cli"]
MB = 1_000_000


def big_store(out: Path, profiles: int) -> Path:
    """The big store of `profiles` profiles in `out`, built the first time
    (`bench_changes.py` measures on it too); measures run on copies."""
    template = out / f"delta-store-{profiles}"
    if not template.exists():
        print(f"building a store of {profiles:,} profiles in {template} ...", flush=True)
        build(template, profiles)
    return template


def folder_bytes(root: Path) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(root)
        for name in names
    )


def timed(*args: str | Path) -> float:
    started = time.perf_counter()
    subprocess.run([*CLI, *map(str, args)], capture_output=True, check=True, timeout=3600)
    return time.perf_counter() - started


def run(store: Path, path: Path, work: Path) -> tuple[float, int]:
    """(wall seconds, bytes added to the store folder) of one import."""
    before = folder_bytes(store) if store.exists() else 0
    wall = timed(
        "run", "--quiet", "--store", store, "--report", work / "report.json",
        "--rejects", work / "rejects.ndjson", path,
    )  # fmt: skip
    return wall, folder_bytes(store) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_100_000)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--imports", type=int, default=4, help="imports in a row onto the store")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    template = big_store(args.out, args.profiles)
    work = args.out / "delta-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    inputs = []
    for n in range(args.imports):
        path = args.out / f"delta-commands-{args.lines}-seed{11 + n}-users{args.profiles}.ndjson"
        if not path.exists():
            generate_commands(args.lines, path, seed=11 + n, users=args.profiles)
        inputs.append(path)

    empty_wall, empty_bytes = run(work / "empty", inputs[0], work)
    store = work / "store"
    shutil.copytree(template, store)
    size = folder_bytes(store)
    print(f"store: {args.profiles:,} profiles, {size / MB:,.1f} MB; import: {args.lines:,} lines")
    print("| import | wall s | x empty | MB written | % of store |")
    print("|---|---:|---:|---:|---:|")
    print(f"| onto an empty store | {empty_wall:.2f} | 1.00 | {empty_bytes / MB:.2f} | |")
    for n, path in enumerate(inputs, 1):
        wall, written = run(store, path, work)
        share = 100 * written / size
        row = f"| #{n} onto the {args.profiles:,}-profile store | {wall:.2f} | "
        print(f"{row}{wall / empty_wall:.2f} | {written / MB:.2f} | {share:.2f}% |", flush=True)
    before = folder_bytes(store)
    wall = timed("compact", "--store", store)
    written = folder_bytes(store) - before
    share = 100 * written / size
    print(f"| `compact` (every bucket) | {wall:.2f} | | {written / MB:.2f} | {share:.2f}% |")
    wall = timed("verify", "--store", store)
    print(f"verify after compact: {wall:.2f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
