"""Shared helpers for the tests: running the CLI, writing inputs, reading stores."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from profile_import.core.numbering import first_lines
from profile_import.inputs.content import ContentHash, count_range, hash_content
from profile_import.inputs.plan import DEFAULT_SPLIT_BYTES, InputSplit, list_inputs, split_ranges
from profile_import.runners import cli
from profile_import.stores import failpoints

CLI = [sys.executable, "-m", "profile_import.runners.cli"]
SYSTEM_FIELDS = ("created_at", "last_modified_at")
ONE_WORKER = ("--direct_num_workers=1",)
# Beam's local runner as a run without options gets it: a worker process per core.
LOCAL = ("--runner=FnApiRunner",)
# Beam's portable runner with an embedded job service and its workers in the
# launching process: the job-submission path Flink and Spark take, offline.
# (The experiment spares each submission a `pip freeze` of the environment.)
PORTABLE = (
    "--runner=PortableRunner",
    "--job_endpoint=embed",
    "--environment_type=LOOPBACK",
    "--experiments=disable_logging_submission_environment",
)


def run_cli(
    *args: str | Path,
    beam: Sequence[str] = (),
    timeout: float = 300,
    command: Sequence[str] = CLI,
) -> subprocess.CompletedProcess[str]:
    """Runs `profile-import ARGS`; `run` gets the Beam options `beam` (none: a
    small import runs in this process, as a user's does; the tests of the Beam
    pipeline ask for it: `ONE_WORKER`, `LOCAL`, `PORTABLE`). `command`: another
    `profile-import`, such as one installed from the wheel."""
    argv = [*command, *(str(a) for a in args)]
    if args and args[0] == "run":
        argv += list(beam)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def read_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`profile-import ARGS` for the commands that read a store, in this process
    (~0.25 s less each than a new interpreter)."""
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    saved, sigterm = (sys.stdout, sys.stderr), signal.getsignal(signal.SIGTERM)
    sys.stdout, sys.stderr = out, err
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.stdout, sys.stderr = saved
        # main() sets these for the whole process.
        signal.signal(signal.SIGTERM, sigterm)
        logging.disable(logging.NOTSET)
    out.flush()
    stdout = out.buffer.getvalue().decode()
    return subprocess.CompletedProcess(list(args), code, stdout, err.getvalue())


def write_lines(path: Path, lines: Iterable[str | dict[str, Any]]) -> Path:
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def export(store: str | Path) -> list[dict[str, Any]]:
    result = run_cli("export", "--store", store)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def store_state(store: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """What a user sees of a store: its profiles and its versions; and it verifies."""
    versions = read_cli("versions", "--store", store)
    assert versions.returncode == 0, versions.stderr
    verify = read_cli("verify", "--store", store)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = [line.split()[0] for line in versions.stdout.replace("*", " ").splitlines()]
    exported = read_cli("export", "--store", store)
    assert exported.returncode == 0, exported.stderr
    return without_times([json.loads(line) for line in exported.stdout.splitlines()]), listed


def run_killed_at(point: str, store: str | Path, path: Path, *extra: str) -> None:
    """A real run of `path` into `store`, killed (SIGKILL) at `point`
    (`stores/failpoints.py`)."""
    argv = [*CLI, "run", "--quiet", "--store", str(store), "--report", os.devnull]
    argv += ["--rejects", os.devnull, *ONE_WORKER, *extra, str(path)]
    env = {**os.environ, failpoints.ENV: point}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr


def check_a_kill_leaves_before_or_after(
    store: str, folder: Path, point: str, published: bool
) -> None:
    """A database store: seeded with 50 profiles, then a run of 40 upserts and
    7 deletes killed at `point` leaves the store in the before-state, or the
    after-state if `published`; the rerun completes (or finds it applied)."""
    seed_lines = [upsert({"email_hash": f"h{n}"}, {"n": n}) for n in range(50)]
    seed = write_lines(folder / "seed.ndjson", seed_lines)
    assert run_cli("run", "--store", store, "--rejects", os.devnull, seed).returncode == 0
    before = store_state(store)
    lines = [upsert({"email_hash": f"h{n}"}, {"m": n}) for n in range(0, 80, 2)]
    lines += [delete({"email_hash": f"h{n}"}) for n in range(1, 50, 7)]
    change = write_lines(folder / "change.ndjson", lines)
    run_killed_at(point, store, change)
    after_kill = store_state(store)
    if published:
        assert after_kill[1] == ["1", "2"] and after_kill[0] != before[0]
    else:
        assert after_kill == before
    rerun = run_cli("run", "--store", store, "--rejects", os.devnull, "--report", "-", change)
    assert rerun.returncode == 0, rerun.stderr
    status = json.loads(rerun.stdout)["status"]
    assert status == ("ALREADY_APPLIED" if published else "SUCCEEDED")
    final = store_state(store)
    assert final[1] == ["1", "2"]
    assert len(final[0]) == 50 + 15 - 7  # 15 new even keys h50..h78, 7 deleted


def without_times(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k not in SYSTEM_FIELDS} for p in profiles]


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def upsert(ident: dict[str, Any], profile: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {
        "operation": "UPSERT",
        **ident,
        "force_replace": False,
        **flags,
        "user_profile": profile,
    }


def delete(ident: dict[str, Any]) -> dict[str, Any]:
    return {"operation": "DELETE", **ident}


def write_big_input(path: Path, lines: int, users: int = 20_000) -> Path:
    """A realistic import of `lines` commands (the benchmark's mix, smaller profiles)."""
    import random

    rnd = random.Random(lines)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(lines):
            u = rnd.randrange(users)
            ident: dict[str, Any] = (
                {"compartment_id": str(1000 + u % 3), "user_account_id": f"acct-{u}"}
                if u % 2
                else {"email_hash": f"h{u}"}
            )
            if rnd.random() < 0.1:
                f.write(json.dumps(delete(ident)) + "\n")
            else:
                profile = {"n": rnd.randrange(100), "tags": [rnd.choice("abc")], "o": {"k": u}}
                f.write(json.dumps(upsert(ident, profile, merge_objects=rnd.random() < 0.5)) + "\n")
    return path


def plan(
    paths: Sequence[str],
    split_bytes: int = DEFAULT_SPLIT_BYTES,
    sources: dict[str, str] | None = None,
) -> tuple[list[ContentHash], list[InputSplit]]:
    """What the pipeline's first steps compute (`transforms.number_splits`,
    `transforms.hash_inputs`), in one process and from the same functions: each
    input's content hash and its numbered splits."""
    files = list_inputs(paths, sources=sources)
    splits: list[InputSplit] = []
    for file in files:
        ranges = split_ranges(file, split_bytes)
        numbers = first_lines(count_range(r) for r in ranges if r.end is not None)
        splits += [replace(r, first_line=numbers.get(r.start, 1)) for r in ranges]
    return [hash_content(f) for f in files], splits


def message_lines(stderr: str) -> list[str]:
    """The command's own lines on stderr (`profile-import: ...`), without the run's log."""
    return [line for line in stderr.splitlines() if line.startswith("profile-import: ")]


def on_terminal(argv: list[str], columns: int = 0, rows: int = 0) -> tuple[int, str]:
    """Runs `argv` with stderr on a new terminal of that size (0x0: one that
    reports no size); returns (status, what it drew)."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(argv, stderr=secondary, stdout=subprocess.DEVNULL)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed: the process is over
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return process.wait(timeout=300), b"".join(chunks).decode()
