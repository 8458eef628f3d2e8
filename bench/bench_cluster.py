"""One import on the test Flink cluster against Beam's local runner, same input,
same machine, same store server: wall time, the CPU of every process, and
where the cluster's time goes (Flink's REST API, per step).

    python bench/bench_cluster.py [--lines 1000000] [--out bench/out/cluster.json]

Starts what tests/cluster.py starts (an S3 server, one JobManager, two
TaskManagers, a worker pool each, Beam's job server), puts the input
(`bench.py`'s, as `shared/bench/gen_commands.py` writes it) in the bucket, then runs the workers'
environment's `profile-import run` twice into two new stores in the bucket:
`--runner=FnApiRunner` (one worker process per core) and `--runner=FlinkRunner`
(parallelism 2). CPU: the launching command and everything it waited for
(the local runner's workers), each JVM, and each worker pool with the SDK
workers it started and reaped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import generate_commands  # noqa: E402 - bench.py beside this script, not the folder
from tests.cluster import FlinkCluster, ensure_cache, free_port, http_json, install_project  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (and of its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def live_children_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def cluster_cpu(cluster: FlinkCluster) -> dict[str, float]:
    found = {}
    for service in cluster.processes.services:
        if not service.alive():
            continue
        pid = service.process.pid
        pool = service.name.startswith("worker-pool")
        found[service.name] = cpu_seconds(pid, children=pool) + (
            live_children_cpu(pid) if pool else 0.0
        )
    return found


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds, CPU seconds of the command and what it waited for, its report."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout)


def steps(cluster: FlinkCluster, jid: str) -> list[dict[str, Any]]:
    job = http_json(f"{cluster.rest}/jobs/{jid}")
    out = []
    for vertex in sorted(job["vertices"], key=lambda v: v["start-time"]):
        detail = http_json(f"{cluster.rest}/jobs/{jid}/vertices/{vertex['id']}")
        out.append(
            {
                "step": vertex["name"][:120],
                "start_s": round((vertex["start-time"] - job["start-time"]) / 1000, 1),
                "duration_s": round(vertex["duration"] / 1000, 1),
                "subtasks": [
                    {
                        "taskmanager": s["taskmanager-id"],
                        "records_in": s["metrics"]["read-records"],
                        "busy_ms": s["metrics"].get("accumulated-busy-time"),
                    }
                    for s in detail["subtasks"]
                ],
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "cluster.json"))
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    os.environ.update(env)
    import boto3

    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    source = folder / "commands.ndjson"
    generate_commands(args.lines, source)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bench")
    s3.upload_file(str(source), "bench", "in/commands.ndjson")
    # 1 GiB TaskManagers run out of heap receiving the parse step's batches of
    # a 1M-line input (and hang), and out of direct memory in the apply step
    # with no task off-heap memory (see SCALING.md).
    cluster = FlinkCluster(
        ensure_cache(),
        folder / "cluster",
        env,
        taskmanager_memory="3g",
        taskmanager_off_heap="768m",
    )
    results: dict[str, Any] = {"lines": args.lines, "bytes": source.stat().st_size}
    try:
        install_project(cluster.venv, folder)
        cluster.start()
        launch_env = cluster.launch_env()
        common = [*cluster.cli, "run", "--rejects", os.devnull, "--report", "-"]
        given = "s3://bench/in/commands.ndjson"
        wall, cpu, report = run(
            [*common, "--store", "s3://bench/local", "--runner=FnApiRunner", given], launch_env
        )
        results["local"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "report": report}
        before = cluster_cpu(cluster)
        wall, cpu, report = run(
            [*common, "--store", "s3://bench/flink", given, *cluster.run_args()], launch_env
        )
        after = cluster_cpu(cluster)
        jid = cluster.jobs()[-1]["jid"]
        results["flink"] = {
            "wall_s": round(wall, 2),
            "launcher_cpu_s": round(cpu, 2),
            "cluster_cpu_s": {k: round(after[k] - before.get(k, 0.0), 2) for k in after},
            "job_s": round(http_json(f"{cluster.rest}/jobs/{jid}")["duration"] / 1000, 1),
            "steps": steps(cluster, jid),
            "report": report,
        }
    finally:
        cluster.stop()
        server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name in ("local", "flink"):
        r = results[name]
        print(name, r["wall_s"], "s wall", r.get("cpu_s", r.get("launcher_cpu_s")), "s CPU")
    print("cluster CPU", results["flink"]["cluster_cpu_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
