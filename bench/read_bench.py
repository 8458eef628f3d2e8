"""Times `list` and `get --ids` against `export` on a store of N profiles.

    .venv/bin/python bench/read_bench.py [--profiles 1000000] [--out bench/out]

The store is written directly through the snapshot store's own staging sink
and commit (no import run): N profiles shaped like `shared/bench/gen_commands.py`'s
(50% accounts, 30% email hashes, 20% user agents), 64 buckets. It is kept in
`--out` and reused. Each row is one CLI subprocess, wall time, start-up included.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from profile_import.core import records
from profile_import.core.cursors import Cursor
from profile_import.core.filters import Query
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier, bucket_of
from profile_import.stores.snapshot import SnapshotStore

CLI = [sys.executable, "-m", "profile_import.runners.cli"]
T = "2026-11-01T00:00:00.000Z"
INTERESTS = ["Drama", "Romance", "Sci-Fi", "Sports", "News", "Cooking", "Travel", "Music"]


def identifier(u: int) -> Identifier:
    kind = u % 10
    if kind < 5:
        return Identifier.account(str(1000 + u % 3), f"acct-{u}")
    if kind < 8:
        return Identifier.email_hash(hashlib.sha256(f"user{u}@example.com".encode()).hexdigest())
    return Identifier.user_agent_id(f"vec:{u:012d}")


def profile(rnd: random.Random) -> dict[str, Any]:
    return {
        "first_name": rnd.choice(["Ann", "Bob", "Cid", "Dee"]),
        "age": rnd.randrange(18, 90),
        "score": rnd.random(),
        "opt_in": rnd.random() < 0.5,
        "interests": rnd.sample(INTERESTS, 2),
        "address": {"city": rnd.choice(["Paris", "Lyon", "Oslo"]), "zip": "75001"},
        "last_seen": f"2026-11-{rnd.randrange(1, 28):02d}",
    }


def build(root: Path, count: int) -> SnapshotStore:
    store = SnapshotStore(str(root), buckets=64)
    if store.current() is not None:
        return store
    rnd = random.Random(7)
    by_bucket: list[list[bytes]] = [[] for _ in range(store.buckets)]
    for u in range(count):
        key = identifier(u).key
        line = records.encode(key, StoredProfile(profile(rnd), T, T))
        by_bucket[bucket_of(key, store.buckets)].append(line)
    with store.lock():
        staging = store.begin("bench", None)
        for bucket, lines in enumerate(by_bucket):
            lines.sort()
            staging.sink.write_bucket(bucket, lines)
        store.commit(staging, {"fingerprint": "bench"}, count, store.buckets, ["bench"])
    return store


def timed(*args: str, stdin: bytes | None = None) -> tuple[float, int, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, check=True, timeout=3600
    )
    elapsed = time.perf_counter() - started
    return elapsed, result.stdout.count(b"\n"), result.stderr.decode().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    args = parser.parse_args()
    root = Path(args.out) / f"read-store-{args.profiles}"
    started = time.perf_counter()
    store_obj = build(root, args.profiles)
    print(f"store of {args.profiles:,} profiles ready in {time.perf_counter() - started:.1f} s")
    store = str(root)

    rows: list[tuple[str, float, int, str]] = []

    def row(name: str, *cli: str, stdin: bytes | None = None) -> str:
        elapsed, lines, info = timed(*cli, stdin=stdin)
        rows.append((name, elapsed, lines, info))
        print(f"{name:<48} {elapsed:7.2f} s {lines:>9,} lines  {info[:90]}", flush=True)
        return info

    row("startup: versions", "versions", "--store", store)
    row("export (everything)", "export", "--store", store)
    row("list (first page of 300)", "list", "--store", store)
    first = row("list --where address.city eq Oslo", "list", "--store", store, "--where",
                'address.city eq "Oslo"')  # fmt: skip
    row("list the next page (--cursor)", "list", "--store", store, "--where",
        'address.city eq "Oslo"', "--cursor", json.loads(first)["next_cursor"])  # fmt: skip
    # A page from the middle: the cursor's key is the 500,000th profile's.
    version = store_obj.current()
    assert version is not None
    middle, _ = next(itertools.islice(store_obj.scan(version), args.profiles // 2, None))
    deep = Cursor(version.number, middle, Query.parse([]).digest()).encode()
    row("list from the middle (--cursor)", "list", "--store", store, "--cursor", deep)
    row("list --where age gte 89 (1 in 72)", "list", "--store", store, "--where", "age gte 89")
    row("list --where first_name eq Zed (none: full scan)", "list", "--store", store, "--where",
        'first_name eq "Zed"')  # fmt: skip
    row("list --where age gt 200 (none: full scan)", "list", "--store", store, "--where",
        "age gt 200")  # fmt: skip
    row("list --properties age --limit 10000", "list", "--store", store, "--properties", "age",
        "--limit", "10000")  # fmt: skip
    for asked in (1_000, 100_000):
        rnd = random.Random(asked)
        ids = b"".join(
            json.dumps(identifier(rnd.randrange(args.profiles * 11 // 10)).fields()).encode()
            + b"\n"
            for _ in range(asked)
        )
        row(f"get --ids ({asked:,} ids, ~9% absent)", "get", "--store", store, "--ids", "-",
            stdin=ids)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
