"""Where a run's CPU goes, by stage: `profile-import run` sampled with py-spy.

    .venv/bin/python bench/stage_costs.py INPUT [--runner-args ARGS] [--rate 100]

Runs `profile-import run INPUT` into a new store under py-spy (`record
--subprocesses --format raw`: every process of the run, the Beam workers
included, sampled `--rate` times a second while on a CPU), then sums the
samples by the stage their stack is in, innermost stage first, and prints a
table: samples, share, and CPU seconds (samples / rate). A stack in none of
the stages is Beam's and Python's own work (start-up, imports, the runner,
moving data between steps): the overhead.

Needs the `bench` extra (py-spy) and permission to trace (root, or
`kernel.yama.ptrace_scope` 0).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# (stage, the frames that mark it, innermost first): a stack counts for the
# first stage one of whose frames it holds, looked for from its top.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "apply: parse each line again (after the shuffle or hand-over)",
        ("load_accepted", "load_commands"),
    ),
    ("apply: group lines by identifier", ("commands_by_key",)),
    ("parse: read lines", ("lines.py:",)),
    ("parse: check lines (orjson, schema, identifier)", ("commands.py:", "validation.py:")),
    ("apply: fold commands (merge)", ("fold.py:", "merge.py:")),
    ("apply: read and write the store", ("stores/snapshot/", "segments.py:", "sorted_files.py:")),
    ("apply: store lines (encode, decode)", ("records.py:", "bucket.py:")),
    ("shuffle: encode, spill and read batches", ("batches.py:",)),
    ("inputs: hash and count newlines", ("content.py:", "numbering.py:")),
    ("final step: check, gather rejects, publish", ("finalize.py:", "ledger.py:")),
    ("imports", ("<frozen importlib._bootstrap",)),
]
OVERHEAD = "Beam and Python overhead (runner, data plane, start-up)"


def stage_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):  # innermost first
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return OVERHEAD


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="the NDJSON input (bench/out/commands-N-seed7.ndjson)")
    parser.add_argument("--runner-args", default="", help="Beam options, as one string")
    parser.add_argument("--rate", type=int, default=100, help="samples a second (100)")
    parser.add_argument("--top", type=int, default=0, help="list the top N overhead frames")
    args = parser.parse_args(argv)
    py_spy = Path(sys.executable).with_name("py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        command = [
            str(py_spy), "record", "--subprocesses", "--gil", "--format", "raw",
            "--rate", str(args.rate),
            "--output", str(raw), "--",
            sys.executable, "-m", "profile_import", "run", "--quiet",
            "--store", str(Path(tmp) / "store"), "--report", str(Path(tmp) / "report.json"),
            "--rejects", str(Path(tmp) / "rejects.ndjson"),
            *shlex.split(args.runner_args), args.input,
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        totals: Counter[str] = Counter()
        overhead: Counter[str] = Counter()
        for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, tail = line.rpartition(" ")
            if stack and tail.isdigit():
                stage = stage_of(stack)
                totals[stage] += int(tail)
                if stage == OVERHEAD:
                    overhead[stack.split(";")[-1]] += int(tail)
    samples = sum(totals.values())
    print(f"{'stage':<58}{'samples':>9}{'share':>8}{'cpu s':>8}")
    for stage, seen in totals.most_common():
        share = seen / samples if samples else 0
        print(f"{stage:<58}{seen:>9}{share:>8.1%}{seen / args.rate:>8.2f}")
    print(f"{'total':<58}{samples:>9}{1:>8.0%}{samples / args.rate:>8.2f}")
    for frame, seen in overhead.most_common(args.top):
        print(f"  {seen:>7}  {frame[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
