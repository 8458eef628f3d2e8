"""End-to-end benchmark of `profile-import run` against a plain loop and DuckDB.

    .venv/bin/python bench/bench.py [--lines N] [--workers-list 1,2] [--skip-duckdb]
                                    [--out DIR] [--keep]

One run measures two cases on the same generated input:

1. an empty store;
2. the store the first run produced, with the same input applied again
   (`--allow-reapply`), so the run reads and rewrites a store of that size.

Rows: the pipeline on the default local runner (one worker per core), the same
with explicit worker counts (`--workers-list`), a plain single-process loop with
the same semantics (the baseline every ratio is against), and DuckDB's
read + group + last-write-wins + write (simplified semantics: the native ceiling).
Every row runs in its own subprocess and its peak RSS is the peak of the sum over
the whole process tree, sampled every 50 ms.

The pipeline's export, counts and rejects must equal the baseline's in both
cases: the script prints PASS or FAIL and exits 1 on any mismatch. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.metadata
import itertools
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from profile_import.inputs.plan import InputFile
from profile_import.runners import runner_choice

DEFAULT_LINES = 1_000_000
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
SEED = 7
BAD_RATIO = 0.005
SAMPLE_SECONDS = 0.05
TIMESTAMP_FIELDS = ("created_at", "last_modified_at")
UTF8_BOM = b"\xef\xbb\xbf"
MIB = 1 << 20


# --- input ------------------------------------------------------------------------------------

INTERESTS = ["Drama", "Romance", "Sci-Fi", "Sports", "News", "Cooking", "Travel", "Music"]


def generate_commands(
    lines: int,
    path: Path,
    *,
    seed: int = SEED,
    users: int | None = None,
    bad_ratio: float = BAD_RATIO,
) -> None:
    """Writes `lines` import commands to `path`, byte for byte what
    shared/bench/gen_commands.py writes with the same arguments.

    Mix: 10% DELETE, 20% UPSERT force_replace, 40% shallow merge, 30% deep merge;
    identifiers 50% account, 30% email_hash, 20% user_agent_id; about 3 commands
    per user; about 0.5% malformed (truncated) lines; ~320 bytes a line.
    """
    rnd = random.Random(seed)
    users = users or max(1, lines // 3)
    with open(path, "wb") as f:
        for _ in range(lines):
            u = rnd.randrange(users)
            r = rnd.random()
            kind = u % 10
            cmd: dict[str, Any] = {"operation": "DELETE" if r < 0.1 else "UPSERT"}
            if kind < 5:
                cmd["compartment_id"] = str(1000 + u % 3)
                cmd["user_account_id"] = f"acct-{u}"
            elif kind < 8:
                cmd["email_hash"] = hashlib.sha256(f"user{u}@example.com".encode()).hexdigest()
            else:
                cmd["user_agent_id"] = f"vec:{u:012d}"
            if cmd["operation"] == "UPSERT":
                cmd["force_replace"] = r < 0.3
                if not cmd["force_replace"]:
                    cmd["merge_objects"] = r >= 0.7
                cmd["user_profile"] = {
                    "first_name": rnd.choice(["Ann", "Bob", "Cid", "Dee"]),
                    "age": rnd.randrange(18, 90),
                    "score": rnd.random(),
                    "opt_in": rnd.random() < 0.5,
                    "interests": rnd.sample(INTERESTS, 2),
                    "address": {
                        "city": rnd.choice(["Paris", "Lyon", "Oslo"]),
                        "zip": str(rnd.randrange(10000, 99999)),
                    },
                    "orders": [
                        {"id": f"o{rnd.randrange(10**6)}", "amount": round(rnd.random() * 100, 2)}
                    ],
                    "last_seen": f"2026-11-{rnd.randrange(1, 28):02d}",
                }
            line = json.dumps(cmd, separators=(",", ":")).encode()
            if rnd.random() < bad_ratio:
                line = line[:-7]
            f.write(line + b"\n")


def cached_input(out: Path, lines: int) -> Path:
    """The generated input of `lines` lines, made once and kept in `out`."""
    path = out / f"commands-{lines}-seed{SEED}.ndjson"
    if not path.exists():
        print(f"generating {lines:,} lines into {path} ...", flush=True)
        partial = path.with_name(path.name + ".partial")
        generate_commands(lines, partial)
        os.replace(partial, path)
    return path


# --- measuring a subprocess -------------------------------------------------------------------


def tree_rss(process: psutil.Process) -> int:
    """The resident memory of a process and all its descendants, in bytes."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):  # exited since the listing
            total += member.memory_info().rss
    return total


@dataclass
class Measured:
    wall: float
    peak_rss: int
    returncode: int
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for


def measure(command: Sequence[str], *, stdout: Path | None, stderr: Path) -> Measured:
    """Runs `command` to its end; wall time and the peak RSS of its process tree.

    Starts once the disk has written back what the rows before wrote (a
    store, an export, spill files: gigabytes at 1M lines), which would
    otherwise slow this row and not the one that wrote it."""
    os.sync()
    peak = 0
    stop = threading.Event()
    with open(stderr, "wb") as err, open(stdout or os.devnull, "wb") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        process = psutil.Process(child.pid)

        def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, tree_rss(process))
                if stop.wait(SAMPLE_SECONDS):
                    return

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        returncode = child.wait()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stop.set()
        sampler.join()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, peak, returncode, cpu)


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


# --- the baseline loop (child process) --------------------------------------------------------


def baseline_child(
    inputs: list[str], start: str | None, export: str, rejects: str
) -> dict[str, Any]:
    """The pipeline's semantics as one plain loop; returns its counts and timing.

    Reads every line in binary, gets the verdict from the project's own
    CommandChecker (orjson + jsonschema-rs), parses each line once and applies
    it at once to its identifier's `ProfileFold` in a dict (the project's
    `apply_commands` in steps), then writes the profiles sorted by key, as
    export lines. `start` is a previous export to start from (the store of case 2).
    The GC is frozen after setup and disabled for the whole loop.
    """
    from profile_import.core import clock, records
    from profile_import.core import rejects as reject_records
    from profile_import.core.codes import LineRejected
    from profile_import.core.commands import CheckSettings
    from profile_import.core.fold import UPSERT, Command, Outcome, ProfileFold, StoredProfile
    from profile_import.core.identifiers import resolve
    from profile_import.core.report import empty_counts

    checker = CheckSettings().build()
    check = checker.check
    max_line_bytes = checker.settings.max_line_bytes
    now = clock.iso(clock.now())
    outcome_counts = {
        Outcome.CREATED: "profiles_created",
        Outcome.UPDATED: "profiles_updated",
        Outcome.UNCHANGED: "profiles_unchanged",
        Outcome.DELETED: "profiles_deleted",
    }
    gc.collect()
    gc.freeze()
    gc.disable()
    started = time.perf_counter()

    stored: dict[bytes, StoredProfile] = {}
    if start is not None:
        with open(start, "rb") as f:
            for line in f:
                obj = orjson.loads(line)
                stored[resolve(obj)] = StoredProfile(
                    obj["user_profile"], obj["created_at"], obj["last_modified_at"]
                )

    counts = empty_counts()
    by_code: dict[str, int] = {}
    folds: dict[bytes, ProfileFold] = {}
    lines = blank = rejected = upserts = 0
    with open(rejects, "wb") as rejects_file:
        for path in inputs:
            with open(path, "rb") as f:
                for number, raw in enumerate(f, 1):
                    lines += 1
                    content = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
                    if number == 1 and content.startswith(UTF8_BOM):
                        content = content[3:]
                    try:
                        accepted = check(content)
                    except LineRejected as e:
                        rejected += 1
                        by_code[e.code] = by_code.get(e.code, 0) + 1
                        truncated = len(content) > max_line_bytes
                        kept = content[:max_line_bytes] if truncated else content
                        rejects_file.write(
                            reject_records.encode(path, number, e, kept, truncated=truncated)
                        )
                        continue
                    if accepted is None:
                        blank += 1
                        continue
                    if accepted.operation == UPSERT:
                        upserts += 1
                    fold = folds.get(accepted.key)
                    if fold is None:
                        folds[accepted.key] = fold = ProfileFold(stored.get(accepted.key))
                    fold.apply(Command.from_object(accepted.obj))

    deletes_missing = 0
    for key, fold in folds.items():
        result = fold.finish(now)
        deletes_missing += result.deletes_missing
        name = outcome_counts.get(result.outcome)
        if name is not None:
            counts[name] += 1
        if result.stored is None:
            stored.pop(key, None)
        else:
            stored[key] = result.stored

    with open(export, "wb") as out:
        for key in sorted(stored):
            out.write(records.encode(key, stored[key])[len(key) + 1 :])
    seconds = time.perf_counter() - started

    accepted_count = lines - blank - rejected
    counts.update(
        lines=lines,
        blank=blank,
        accepted=accepted_count,
        rejected=rejected,
        upserts=upserts,
        deletes=accepted_count - upserts,
        deletes_missing=deletes_missing,
    )
    return {
        "counts": counts,
        "rejects_by_code": by_code,
        "profiles": len(stored),
        "seconds": round(seconds, 3),
    }


# --- DuckDB (child process) -------------------------------------------------------------------

DUCKDB_COLUMNS = (
    "{operation: 'VARCHAR', compartment_id: 'VARCHAR', user_account_id: 'VARCHAR', "
    "email_hash: 'VARCHAR', user_agent_id: 'VARCHAR', force_replace: 'BOOLEAN', "
    "merge_objects: 'BOOLEAN', user_profile: 'JSON'}"
)
IDENTIFIER_COLUMNS = "compartment_id, user_account_id, email_hash, user_agent_id"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_json(path: str) -> str:
    return (
        f"read_json({_sql_string(path)}, format = 'newline_delimited', "
        f"ignore_errors = true, columns = {DUCKDB_COLUMNS})"
    )


def duckdb_child(input_path: str, start: str | None, export: str) -> dict[str, Any]:
    """Last write wins per identifier, in DuckDB: a native ceiling, not our semantics.

    The commands are loaded into a table (insertion order is kept, so `rowid` is
    the line order); lines DuckDB cannot parse become NULL rows and are dropped.
    Per identifier the last command wins (no merge); a last DELETE drops the
    profile. `start` is DuckDB's own previous output, taken as older than every command.
    """
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"CREATE TABLE commands AS SELECT * FROM {_read_json(input_path)}")
    previous = ""
    if start is not None:
        previous = (
            f"SELECT -1 AS seq, 'UPSERT' AS operation, {IDENTIFIER_COLUMNS}, user_profile "
            f"FROM {_read_json(start)} UNION ALL "
        )
    query = f"""
        WITH unioned AS (
            {previous}
            SELECT rowid AS seq, operation, {IDENTIFIER_COLUMNS}, user_profile FROM commands
        ),
        keyed AS (
            SELECT *, CASE
                WHEN email_hash IS NOT NULL THEN 'e' || email_hash
                WHEN user_agent_id IS NOT NULL THEN 'u' || user_agent_id
                ELSE 'a' || compartment_id || chr(9) || user_account_id
            END AS identifier
            FROM unioned WHERE operation IS NOT NULL
        ),
        latest AS (
            SELECT * FROM keyed WHERE identifier IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY identifier ORDER BY seq DESC) = 1
        )
        SELECT {IDENTIFIER_COLUMNS}, user_profile FROM latest
        WHERE operation = 'UPSERT' ORDER BY identifier
    """
    row = con.execute(f"COPY ({query}) TO {_sql_string(export)} (FORMAT JSON)").fetchone()
    con.close()
    return {
        "profiles": int(row[0]) if row else 0,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --- checks -----------------------------------------------------------------------------------


def _without_timestamps(line: bytes) -> Any:
    obj = orjson.loads(line)
    for name in TIMESTAMP_FIELDS:
        obj.pop(name, None)
    return obj


def compare_ndjson(
    ours: Path, reference: Path, *, ignore_timestamps: bool
) -> tuple[int, str | None]:
    """Line by line; returns (lines compared, the first difference or None)."""
    parse = _without_timestamps if ignore_timestamps else orjson.loads
    with open(ours, "rb") as a, open(reference, "rb") as b:
        number = 0
        for number, (left, right) in enumerate(itertools.zip_longest(a, b), 1):
            if left is None or right is None:
                longer = "ours" if right is None else "the baseline's"
                return number - 1, f"{longer} has more lines (from line {number})"
            if parse(left) != parse(right):
                return number - 1, f"line {number} differs: {left[:160]!r} vs {right[:160]!r}"
    return number, None


@dataclass
class Checks:
    results: list[tuple[str, bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed, never failing

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results.append((name, ok, detail))

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)


# --- the rows ---------------------------------------------------------------------------------


@dataclass
class CaseResult:
    measured: Measured | None
    own_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.measured is not None and self.measured.returncode == 0


@dataclass
class Row:
    label: str
    cases: list[CaseResult] = field(default_factory=list)


@dataclass
class Bench:
    input_path: Path
    lines: int
    work: Path
    checks: Checks = field(default_factory=Checks)
    rows: list[Row] = field(default_factory=list)
    baseline_exports: list[Path] = field(default_factory=list)
    baseline_rejects: list[Path] = field(default_factory=list)
    baseline_stats: list[dict[str, Any]] = field(default_factory=list)
    compare: bool = True  # False with --pipeline-only: no loop to compare with
    profiles_after_case_1: int = 0

    def child(self, mode: str, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), mode, *args]

    def run_baseline(self) -> None:
        row = Row("loop: 1 process, jsonschema-rs, gc frozen+off")
        folder = self.work / "baseline"
        folder.mkdir(parents=True)
        for case in (1, 2):
            export = folder / f"export-{case}.ndjson"
            rejects = folder / f"rejects-{case}.ndjson"
            stats = folder / f"stats-{case}.json"
            start = ["--start", str(self.baseline_exports[0])] if case == 2 else []
            command = self.child(
                "--baseline-child",
                *start,
                "--export",
                str(export),
                "--rejects",
                str(rejects),
                "--stats",
                str(stats),
                str(self.input_path),
            )
            measured = measure(command, stdout=None, stderr=folder / f"stderr-{case}.txt")
            if measured.returncode != 0:
                print(f"baseline case {case} failed:\n{tail(folder / f'stderr-{case}.txt')}")
                raise SystemExit(1)
            result = json.loads(stats.read_text())
            row.cases.append(CaseResult(measured, result["seconds"]))
            self.baseline_exports.append(export)
            self.baseline_rejects.append(rejects)
            self.baseline_stats.append(result)
        self.rows.append(row)

    def run_duckdb(self) -> None:
        row = Row("duckdb: last write wins only (simplified)")
        folder = self.work / "duckdb"
        folder.mkdir(parents=True)
        previous: Path | None = None
        for case in (1, 2):
            export = folder / f"export-{case}.ndjson"
            stats = folder / f"stats-{case}.json"
            start = ["--start", str(previous)] if previous is not None else []
            command = self.child(
                "--duckdb-child",
                *start,
                "--export",
                str(export),
                "--stats",
                str(stats),
                str(self.input_path),
            )
            stderr = folder / f"stderr-{case}.txt"
            measured = measure(command, stdout=None, stderr=stderr)
            if measured.returncode != 0:
                print(f"duckdb case {case} failed:\n{tail(stderr)}")
                row.cases.append(CaseResult(measured))
                continue
            result = json.loads(stats.read_text())
            row.cases.append(CaseResult(measured, result["seconds"]))
            reference = self.baseline_stats[case - 1]["profiles"]
            self.checks.note(
                f"case {case} duckdb: {result['profiles']:,} profiles "
                f"(baseline {reference:,}; not checked, simplified semantics)"
            )
            previous = export
        self.rows.append(row)

    def run_pipeline(self, label: str, slug: str, beam_args: list[str]) -> None:
        row = Row(label)
        folder = self.work / slug
        folder.mkdir(parents=True)
        store = folder / "store"
        for case in (1, 2):
            report_path = folder / f"report-{case}.json"
            rejects = folder / f"rejects-{case}.ndjson"
            stderr = folder / f"stderr-{case}.txt"
            command = [
                *profile_import_command(),
                "run",
                "--quiet",
                "--store",
                str(store),
                "--rejects",
                str(rejects),
                "--report",
                str(report_path),
                *(["--allow-reapply"] if case == 2 else []),
                *beam_args,
                str(self.input_path),
            ]
            measured = measure(command, stdout=None, stderr=stderr)
            name = f"case {case} {slug}"
            if measured.returncode != 0:
                self.checks.add(name, False, f"exit {measured.returncode}:\n{tail(stderr)}")
                row.cases.append(CaseResult(measured))
                break  # no store to apply case 2 to
            report = json.loads(report_path.read_text())
            row.cases.append(CaseResult(measured, report.get("duration_seconds")))
            if self.compare:
                self.check_pipeline(
                    name, case=case, store=store, report=report, rejects=rejects, folder=folder
                )
            else:
                self.profiles_after_case_1 = (
                    self.profiles_after_case_1 or (report["counts"]["profiles_created"])
                )
        self.rows.append(row)

    def check_pipeline(
        self,
        name: str,
        *,
        case: int,
        store: Path,
        report: dict[str, Any],
        rejects: Path,
        folder: Path,
    ) -> None:
        baseline = self.baseline_stats[case - 1]
        export = folder / f"export-{case}.ndjson"
        with open(export, "wb") as out:
            done = subprocess.run(
                [*profile_import_command(), "export", "--store", str(store)],
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
        if done.returncode != 0:
            self.checks.add(f"{name} export", False, done.stderr.decode(errors="replace")[-500:])
        else:
            compared, problem = compare_ndjson(
                export, self.baseline_exports[case - 1], ignore_timestamps=True
            )
            self.checks.add(
                f"{name} export == baseline",
                problem is None,
                problem or f"{compared:,} profiles (identifiers + user_profile)",
            )
        counts = report.get("counts", {})
        different = {
            k: (counts.get(k), v) for k, v in baseline["counts"].items() if counts.get(k) != v
        }
        self.checks.add(
            f"{name} counts == baseline",
            not different and report.get("rejects_by_code", {}) == baseline["rejects_by_code"],
            f"differ (ours, baseline): {different}"
            if different
            else f"all {len(baseline['counts'])} counts and rejects by code; "
            f"status {report.get('status')}",
        )
        if rejects.exists():
            compared, problem = compare_ndjson(
                rejects, self.baseline_rejects[case - 1], ignore_timestamps=False
            )
        else:
            compared, problem = 0, None if baseline["counts"]["rejected"] == 0 else "no file"
        self.checks.add(
            f"{name} rejects == baseline",
            problem is None and compared == baseline["counts"]["rejected"],
            problem or f"{compared:,} reject records",
        )


def profile_import_command() -> list[str]:
    script = Path(sys.executable).parent / "profile-import"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "profile_import.runners.cli"]


# --- output -----------------------------------------------------------------------------------


def machine_info() -> list[str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return [
        f"machine: {os.cpu_count()} logical cores ({psutil.cpu_count(logical=False)} physical)"
        f"{', ' + cpu if cpu else ''}; {psutil.virtual_memory().total / (1 << 30):.1f} GiB RAM; "
        f"{platform.platform()}",
        f"software: Python {platform.python_version()}, apache-beam {version('apache-beam')}, "
        f"orjson {version('orjson')}, jsonschema-rs {version('jsonschema-rs')}, "
        f"duckdb {version('duckdb')}, psutil {version('psutil')}",
    ]


CELLS = (
    ("wall s", 7),
    ("lines/s", 9),
    ("x loop", 7),
    ("cpu s", 6),
    ("cpu/loop", 8),
    ("peak MiB", 9),
    ("own s", 7),
)
LABEL_WIDTH = 48


def _cells(
    result: CaseResult, lines: int, baseline_rate: float | None, baseline_cpu: float | None
) -> str:
    m = result.measured
    if m is None or m.returncode != 0:
        first = f"exit {m.returncode}" if m is not None else "-"
        return " ".join(f"{first if i == 0 else '-':>{w}}" for i, (_, w) in enumerate(CELLS))
    rate = lines / m.wall
    ratio = f"{rate / baseline_rate:.2f}" if baseline_rate else "-"
    cpu_ratio = f"{m.cpu / baseline_cpu:.2f}" if baseline_cpu else "-"
    own = f"{result.own_seconds:.2f}" if result.own_seconds is not None else "-"
    values = (
        f"{m.wall:.2f}",
        f"{rate:,.0f}",
        ratio,
        f"{m.cpu:.2f}",
        cpu_ratio,
        f"{m.peak_rss / MIB:,.0f}",
        own,
    )
    return " ".join(f"{v:>{w}}" for v, (_, w) in zip(values, CELLS, strict=True))


def print_table(bench: Bench, profiles_after_case_1: int, *, with_duckdb: bool) -> None:
    width = sum(w for _, w in CELLS) + len(CELLS) - 1
    titles = ("case 1: empty store", f"case 2: store of {profiles_after_case_1:,} profiles")
    print()
    print((" " * LABEL_WIDTH + " | ".join(f"{t:<{width}}" for t in titles)).rstrip())
    header = " ".join(f"{name:>{w}}" for name, w in CELLS)
    print(f"{'row':<{LABEL_WIDTH}}{header} | {header}")
    print("-" * (LABEL_WIDTH + 2 * width + 3))
    rates: list[float | None] = [None, None]
    cpus: list[float | None] = [None, None]
    if bench.compare:
        baseline = bench.rows[0]
        rates = [bench.lines / c.measured.wall if c.measured else None for c in baseline.cases]
        cpus = [c.measured.cpu if c.measured else None for c in baseline.cases]
    for row in bench.rows:
        cells = [
            _cells(
                row.cases[i] if i < len(row.cases) else CaseResult(None),
                bench.lines,
                rates[i],
                cpus[i],
            )
            for i in range(2)
        ]
        print(f"{row.label[: LABEL_WIDTH - 1]:<{LABEL_WIDTH}}{' | '.join(cells)}")
    print()
    print(
        "wall s: the subprocess from start to exit (interpreter start and imports included); "
        "lines/s: input lines / wall s;\n"
        "x loop: lines/s over the loop's; cpu s: user + system CPU of the process tree, "
        "cpu/loop: over the loop's;\npeak MiB: max over 50 ms samples of the RSS summed "
        "over the process and all its descendants;\n"
        "own s: the tool's own figure (pipeline: the report's duration_seconds; loop and "
        "duckdb: their work inside the process).\n"
        "loop: the same semantics in one process (CommandChecker verdict, one ProfileFold "
        "per identifier), gc.freeze() after setup, gc.disable() during the loop."
    )
    if with_duckdb:
        print(
            "duckdb: parse + group + last write wins + sorted write, no merge semantics and no "
            "validation: a native ceiling, not a like-for-like result."
        )


def print_checks(checks: Checks) -> None:
    print("\nchecks (pipeline vs baseline loop; timestamps ignored):")
    for name, ok, detail in checks.results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    for text in checks.notes:
        print(f"  info  {text}")
    print(f"\nRESULT: {'PASS' if checks.passed else 'FAIL'}")


# --- command line -----------------------------------------------------------------------------


def _workers_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("worker counts are 1 or more")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark profile-import run against a plain loop and DuckDB."
    )
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES, help="input lines (1000000)")
    parser.add_argument(
        "--workers-list",
        type=_workers_list,
        default=[1, 2],
        metavar="N,N",
        help="explicit worker counts for the scaling rows (default 1,2; 1 runs in_memory)",
    )
    parser.add_argument("--skip-duckdb", action="store_true", help="no DuckDB row")
    parser.add_argument(
        "--no-beam-row",
        dest="beam_row",
        action="store_false",
        help="no row of Beam's local runner when the default run is in process",
    )
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="only the pipeline rows, no loop, no DuckDB, no comparison (for inputs too large "
        "for the loop, which holds every profile in memory)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="inputs cache and work folder (bench/out)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the stores, exports, rejects and logs"
    )
    # The children, run by the benchmark itself in their own process.
    hidden = argparse.SUPPRESS
    parser.add_argument("--baseline-child", action="store_true", help=hidden)
    parser.add_argument("--duckdb-child", action="store_true", help=hidden)
    parser.add_argument("--start", help=hidden)
    parser.add_argument("--export", help=hidden)
    parser.add_argument("--rejects", help=hidden)
    parser.add_argument("--stats", help=hidden)
    parser.add_argument("inputs", nargs="*", help=hidden)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline_child or args.duckdb_child:
        if args.baseline_child:
            stats = baseline_child(args.inputs, args.start, args.export, args.rejects)
        else:
            stats = duckdb_child(args.inputs[0], args.start, args.export)
        Path(args.stats).write_text(json.dumps(stats))
        return 0
    if args.lines < 1:
        raise SystemExit("--lines must be 1 or more")

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    input_path = cached_input(out, args.lines)
    work = out / f"run-{args.lines}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    bench = Bench(input_path, args.lines, work, compare=not args.pipeline_only)
    if args.pipeline_only:
        args.skip_duckdb = True
    print("\n".join(machine_info()))
    size = input_path.stat().st_size
    print(f"input: {input_path} ({args.lines:,} lines, {size / MIB:,.1f} MiB)")
    print(f"work folder: {work}{'' if args.keep else ' (removed at the end; --keep keeps it)'}")

    cores = os.cpu_count() or 1
    # With no Beam option the command picks its engine by the input's size
    # (and the memory free); the Beam row runs Beam's local runner anyway.
    in_process = runner_choice.small([InputFile(0, str(input_path), size, None)])
    processes = runner_choice.local_workers(size)
    default = (
        f"no Beam, {processes} process{'es' if processes > 1 else ''}"
        if in_process
        else f"Beam, {cores} workers"
    )
    beam = (
        f"pipeline: Beam local runner, {cores} workers",
        "pipeline-beam",
        [f"--runner={runner_choice.LOCAL_RUNNER}"],
    )
    beam_row = [beam] if in_process and args.beam_row else []
    pipelines = [
        (f"pipeline: default ({default})", "pipeline-default", []),
        *beam_row,
        *(
            (
                f"pipeline: {n} worker{'s' if n > 1 else ''}, "
                f"{'in_memory' if n == 1 else 'multi_processing'}",
                f"pipeline-{n}-workers",
                [
                    f"--direct_num_workers={n}",
                    f"--direct_running_mode={'in_memory' if n == 1 else 'multi_processing'}",
                ],
            )
            for n in args.workers_list
        ),
    ]
    steps = int(bench.compare) + (0 if args.skip_duckdb else 1) + len(pipelines)
    try:
        step = 0
        if bench.compare:
            step += 1
            print(f"[{step}/{steps}] baseline loop", flush=True)
            bench.run_baseline()
        if not args.skip_duckdb:
            step += 1
            print(f"[{step}/{steps}] duckdb", flush=True)
            bench.run_duckdb()
        for label, slug, beam_args in pipelines:
            step += 1
            print(f"[{step}/{steps}] {label}", flush=True)
            bench.run_pipeline(label, slug, beam_args)
        # The baseline first, the pipelines next, DuckDB last.
        if not args.skip_duckdb:
            bench.rows.append(bench.rows.pop(1))
        profiles = (
            bench.baseline_stats[0]["profiles"] if bench.compare else bench.profiles_after_case_1
        )
        print_table(bench, profiles, with_duckdb=not args.skip_duckdb)
        print_checks(bench.checks)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if bench.checks.passed else 1


if __name__ == "__main__":
    sys.exit(main())
