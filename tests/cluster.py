"""A real Flink cluster (and a standalone Spark one) on this machine, for the
cluster tests, from the artifacts `tools/cluster/fetch.sh` caches:

    Flink JobManager ─ TaskManager 0 ─ SDK worker pool 0 (127.0.0.2)
                     └ TaskManager 1 ─ SDK worker pool 1 (127.0.0.3)
    Beam's job server (its own JVM) ─► the JobManager's REST API
    the launching command (`profile-import run --runner=FlinkRunner ...`)

Every part is its own process: each JVM, each worker pool, each SDK worker.
The workers run in their own virtual environment, holding the project
installed from its wheel (not this source tree) and the Beam release of the
job server. On a real cluster each TaskManager host runs its own worker pool
at `localhost:PORT`; here the two share one machine, so each TaskManager
resolves the pool's host name to its own loopback address (a JVM hosts file)
and its pool listens there: the TaskManagers number their SDK workers alike
("1-1", ...), and one shared pool would stop the wrong one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "tools" / "cluster" / "fetch.sh"
CACHE = Path(os.environ.get("PROFILE_IMPORT_CLUSTER_CACHE", ROOT / ".cache" / "cluster"))
BEAM_VERSION = "2.70.0"
FLINK_VERSION = "1.19"
# The host name the pipeline names for its SDK workers' pool (EXTERNAL environment).
POOL_HOST = "sdk-worker-pool"
POOL_ADDRESSES = ("127.0.0.2", "127.0.0.3")
PARALLELISM = 2
# How long a TaskManager keeps a job's SDK workers after a step ends, for its
# next step (with Beam's runner on the cluster's class path).
ENVIRONMENT_CACHE_MILLIS = 60_000
# Beam's worker pool, bound to one address (Beam's own binds every address,
# with SO_REUSEPORT: two pools on one port would share their connections).
POOL_SCRIPT = """
import sys, time, grpc
from concurrent import futures
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
servicer = BeamFnExternalWorkerPoolServicer(use_process=True)
beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(servicer, server)
server.add_insecure_port(sys.argv[1])
server.start()
print("worker pool listening on", sys.argv[1], flush=True)
server.wait_for_termination()
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    what: str,
    ready: Any,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = ready()
            if value:
                return value
        except (OSError, ValueError):
            pass
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what}: the process exited ({process.returncode}): {tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s: {tail}")
        time.sleep(0.5)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def http_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def missing_tools() -> str | None:
    """Why the cluster cannot be fetched or started here, or None."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on the PATH (the cluster tests need Java 17 and Maven)"
    return None


def ensure_cache() -> Path:
    """The fetched artifacts, fetching them on first use (tools/cluster/fetch.sh)."""
    why = missing_tools()
    if why:
        pytest.skip(why)
    subprocess.run(
        ["bash", str(FETCH)],
        check=True,
        env={**os.environ, "PROFILE_IMPORT_CLUSTER_CACHE": str(CACHE)},
    )
    return CACHE


def wheel_digest(wheel: Path) -> str:
    """The wheel's files and their content (its zip's timestamps vary by build)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    return digest.hexdigest()


def install_project(venv: Path, scratch: Path) -> None:
    """Installs this checkout's wheel into the workers' environment (with any
    dependency it gained since the environment was made; Beam stays pinned),
    unless that very wheel is installed there (the Spark tests after Flink's)."""
    wheels = scratch / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("profile_import-*.whl")
    digest = wheel_digest(wheel)
    installed = venv / "profile-import-wheel.sha256"
    if installed.exists() and installed.read_text() == digest:
        return
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    subprocess.run([*pip, "uninstall", "-y", "profile-import"], check=True)
    subprocess.run(
        [*pip, "install", f"{wheel}[s3,gcp,postgresql]", f"apache-beam[gcp]=={BEAM_VERSION}"],
        check=True,
    )
    installed.write_text(digest)


@dataclass
class Service:
    """One process of the cluster, in its own process group (killed with its children)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


@dataclass
class Processes:
    folder: Path
    services: list[Service] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> Service:
        log = self.folder / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or self.folder,
                start_new_session=True,  # its own process group: killed with its children
            )
        service = Service(name, process, log)
        self.services.append(service)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.kill(signal.SIGTERM)
        self.services.clear()


def _flink_config(
    log_dir: Path, rpc_port: int, rest_port: int, tm_memory: str, tm_off_heap: str
) -> str:
    opens = " ".join(
        f"--add-opens=java.base/{p}=ALL-UNNAMED"
        for p in (
            "java.lang",
            "java.net",
            "java.io",
            "java.nio",
            "sun.nio.ch",
            "java.lang.reflect",
            "java.text",
            "java.time",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "java.util.concurrent.locks",
        )
    )
    # Beam's gRPC buffers to and from the SDK workers are direct memory.
    off_heap = f"\n    task:\n      off-heap:\n        size: {tm_off_heap}" if tm_off_heap else ""
    return f"""\
env:
  java:
    opts:
      all: --add-exports=java.base/sun.net.util=ALL-UNNAMED {opens}
  log:
    dir: {log_dir}
# The JVMs' working files (every job's jars among them) in the cluster's
# folder, not in /tmp, where a stopped JVM leaves them behind.
io:
  tmp:
    dirs: {log_dir.parent / "tmp"}
jobmanager:
  bind-host: 127.0.0.1
  rpc:
    address: 127.0.0.1
    port: {rpc_port}
  memory:
    process:
      size: 768m
  execution:
    failover-strategy: region
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: 1
  memory:
    process:
      size: {tm_memory}{off_heap}
parallelism:
  default: {PARALLELISM}
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: {rest_port}
# A failed task is retried (a killed TaskManager's work moves to the other).
restart-strategy:
  type: fixed-delay
  fixed-delay:
    attempts: 10
    delay: 5 s
# Beam's runner classes from the cluster's own class path (`beam_class_path`),
# not from each job's class loader: only then does a TaskManager keep its SDK
# workers from one step of a job to the next (`--environment_cache_millis`).
classloader:
  resolve-order: parent-first
# A killed TaskManager is noticed in seconds rather than the default 50.
heartbeat:
  interval: 2000
  timeout: 10000
"""


@dataclass
class Cluster:
    """What both clusters share: the workers' environment and their pools."""

    cache: Path
    folder: Path
    env: Mapping[str, str]  # the store's endpoints and credentials, for the workers
    processes: Processes = field(init=False)
    job_port: int = 0
    pool_port: int = 0
    pools: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.processes = Processes(self.folder)

    @property
    def venv(self) -> Path:
        return self.cache / "venv"

    @property
    def cli(self) -> list[str]:
        """The launching command: the workers' environment's `profile-import`."""
        return [str(self.venv / "bin" / "profile-import")]

    def launch_env(self) -> dict[str, str]:
        """The environment of the launching command (the workers' venv first)."""
        return {**os.environ, **self.env, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}"}

    def run_args(self) -> list[str]:
        raise NotImplementedError

    def start_pool(self, index: int) -> Service:
        """(Re)starts the worker pool of TaskManager `index`."""
        env = {**os.environ, **self.env, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}"}
        address = f"{POOL_ADDRESSES[index]}:{self.pool_port}"
        pool = self.processes.start(
            f"worker-pool-{index}",
            [str(self.venv / "bin" / "python"), "-c", POOL_SCRIPT, address],
            env,
        )
        wait_for(
            f"worker pool {index}",
            lambda: port_open(POOL_ADDRESSES[index], self.pool_port),
            120,
            pool.process,
            pool.log,
        )
        if index < len(self.pools):
            self.pools[index] = pool
        else:
            self.pools.append(pool)
        return pool


@dataclass
class FlinkCluster(Cluster):
    """One JobManager, two TaskManagers, a worker pool per TaskManager, Beam's job server."""

    rest_port: int = 0
    taskmanagers: list[Service] = field(default_factory=list)
    # Each TaskManager's JVM in all (the tests' inputs are small).
    taskmanager_memory: str = "1024m"
    taskmanager_off_heap: str = ""  # Flink's default (none)

    @property
    def flink_home(self) -> Path:
        return self.cache / "flink-1.19" / "pyflink"

    @property
    def job_server_jar(self) -> Path:
        return self.cache / "flink-job-server" / "flink-job-server.jar"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def beam_class_path(self) -> str:
        """Beam's runner and what it needs beyond Flink's own jars (the job
        server's libraries, less Flink, its serializer and logging)."""
        skip = ("flink-", "slf4j-", "kryo-", "minlog-", "objenesis-", "chill-")
        jars = sorted((self.job_server_jar.parent / "lib").glob("*.jar"))
        return ":".join(str(j) for j in jars if not j.name.startswith(skip))

    def jvm_env(self, taskmanager: int | None = None) -> dict[str, str]:
        """The environment of a JobManager (or of TaskManager `taskmanager`,
        with its hosts file): Flink's start scripts add HADOOP_CLASSPATH to
        the JVM's class path."""
        env = {
            **os.environ,
            "FLINK_CONF_DIR": str(self.folder / "conf"),
            "FLINK_LOG_DIR": str(self.folder / "flink-logs"),
            "FLINK_PID_DIR": str(self.folder),
            "HADOOP_CLASSPATH": self.beam_class_path(),
        }
        if taskmanager is not None:
            hosts = self.folder / f"hosts-{taskmanager}"
            env["JVM_ARGS"] = f"-Djdk.net.hosts.file={hosts}"
        return env

    def run_args(self, own_job_server: bool = False) -> list[str]:
        """The Beam options of a run on this cluster: through its running job
        server, or (`own_job_server`) one Beam starts from the launcher jar."""
        server = (
            [f"--flink_job_server_jar={self.job_server_jar}", f"--flink_version={FLINK_VERSION}"]
            if own_job_server
            else [f"--job_endpoint=127.0.0.1:{self.job_port}"]
        )
        return [
            "--runner=FlinkRunner",
            f"--flink_master=127.0.0.1:{self.rest_port}",
            *server,
            "--environment_type=EXTERNAL",
            f"--environment_config={POOL_HOST}:{self.pool_port}",
            f"--parallelism={PARALLELISM}",
            # A TaskManager keeps its SDK workers from one step to the next.
            f"--environment_cache_millis={ENVIRONMENT_CACHE_MILLIS}",
            "--experiments=disable_logging_submission_environment",
        ]

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        logs = self.folder / "flink-logs"
        logs.mkdir(exist_ok=True)
        (self.folder / "tmp").mkdir(exist_ok=True)
        conf = self.folder / "conf"
        conf.mkdir(exist_ok=True)
        for name in ("log4j.properties", "log4j-console.properties"):
            shutil.copy(self.flink_home / "conf" / name, conf / name)
        self.rest_port = free_port()
        config = _flink_config(
            logs, free_port(), self.rest_port, self.taskmanager_memory, self.taskmanager_off_heap
        )
        (conf / "config.yaml").write_text(config)
        bin_dir = self.flink_home / "bin"
        self.processes.start(
            "jobmanager", [str(bin_dir / "jobmanager.sh"), "start-foreground"], self.jvm_env()
        )
        self.pool_port = free_port()
        hostname = socket.gethostname()
        for index, address in enumerate(POOL_ADDRESSES):
            self.start_pool(index)
            hosts = self.folder / f"hosts-{index}"
            hosts.write_text(f"127.0.0.1 localhost {hostname}\n{address} {POOL_HOST}\n")
            self.taskmanagers.append(
                self.processes.start(
                    f"taskmanager-{index}",
                    [str(bin_dir / "taskmanager.sh"), "start-foreground"],
                    self.jvm_env(index),
                )
            )
        jm = self.processes.services[0]
        wait_for(
            "Flink's two TaskManagers",
            lambda: http_json(f"{self.rest}/overview")["taskmanagers"] == 2,
            240,
            jm.process,
            jm.log,
        )
        self.job_port = free_port()
        job_server = self.processes.start(
            "job-server",
            [
                "java",
                "-Xmx512m",
                "-jar",
                str(self.job_server_jar),
                f"--flink-master=127.0.0.1:{self.rest_port}",
                "--job-host=127.0.0.1",
                f"--job-port={self.job_port}",
                "--artifact-port=0",
                "--expansion-port=0",
            ],
            os.environ,
        )
        wait_for(
            "Beam's job server",
            lambda: port_open("127.0.0.1", self.job_port),
            180,
            job_server.process,
            job_server.log,
        )

    def start_taskmanager(self, index: int) -> Service:
        """(Re)starts TaskManager `index` (after a fault test killed it)."""
        tm = self.processes.start(
            f"taskmanager-{index}",
            [str(self.flink_home / "bin" / "taskmanager.sh"), "start-foreground"],
            self.jvm_env(index),
        )
        self.taskmanagers[index] = tm
        return tm

    def wait_taskmanagers(self, count: int = 2, timeout: float = 240) -> None:
        wait_for(
            f"{count} TaskManagers",
            lambda: (
                http_json(f"{self.rest}/overview")["taskmanagers"] == count
                and http_json(f"{self.rest}/overview")["slots-available"] == count
            ),
            timeout,
        )

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = http_json(f"{self.rest}/jobs/overview")["jobs"]
        return sorted(jobs, key=lambda j: j["start-time"])

    def wait_step_started(self, part: str, known: set[str], timeout: float = 180) -> str:
        """Waits until a job not in `known` has started the step whose name
        holds `part` (running it, or past it: a short step can start and end
        between two looks), or has ended; returns the job's id."""

        def started() -> str | None:
            for job in self.jobs():
                if job["jid"] in known:
                    continue
                if job["state"] in ("FINISHED", "FAILED", "CANCELED"):
                    return str(job["jid"])
                detail = http_json(f"{self.rest}/jobs/{job['jid']}")
                for vertex in detail["vertices"]:
                    if part in vertex["name"] and vertex["status"] in ("RUNNING", "FINISHED"):
                        return str(job["jid"])
            return None

        found: str = wait_for(f"a job starting {part}", started, timeout)
        return found

    def job_ids(self) -> set[str]:
        return {str(job["jid"]) for job in self.jobs()}

    def subtasks(self, jid: str, part: str) -> list[dict[str, Any]]:
        """The subtasks of the job's step whose name holds `part` (Flink's
        REST API: each with its TaskManager and its records in and out)."""
        job = http_json(f"{self.rest}/jobs/{jid}")
        (vertex,) = (v for v in job["vertices"] if part in v["name"])
        found: list[dict[str, Any]] = http_json(f"{self.rest}/jobs/{jid}/vertices/{vertex['id']}")[
            "subtasks"
        ]
        return found

    def job_state(self, jid: str) -> str:
        state: str = http_json(f"{self.rest}/jobs/{jid}")["state"]
        return state

    def healthy(self) -> None:
        """Back to two TaskManagers with free slots and both pools (after a fault test)."""
        self.cancel_running()
        for index, pool in enumerate(self.pools):
            if not pool.alive():
                self.start_pool(index)
        for index, tm in enumerate(self.taskmanagers):
            if not tm.alive():
                self.start_taskmanager(index)
        self.wait_taskmanagers()

    def cancel_running(self) -> None:
        for job in self.jobs():
            if job["state"] in ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING"):
                http_json(f"{self.rest}/jobs/{job['jid']}?mode=cancel", method="PATCH")

    def stop(self) -> None:
        self.processes.stop_all()


@dataclass
class SparkCluster(Cluster):
    """A standalone Spark 3.5 cluster (a master, one worker), a worker pool,
    Beam's Spark job server (the Spark driver runs in its JVM)."""

    @property
    def spark_home(self) -> Path:
        return self.cache / "spark-3.5" / "pyspark"

    def run_args(self) -> list[str]:
        return [
            "--runner=SparkRunner",
            f"--job_endpoint=127.0.0.1:{self.job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config={POOL_ADDRESSES[0]}:{self.pool_port}",
            # Spark's executors keep their SDK workers from one stage to the next.
            f"--environment_cache_millis={ENVIRONMENT_CACHE_MILLIS}",
            "--experiments=disable_logging_submission_environment",
        ]

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        master_port, self.job_port, self.pool_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOG_DIR": str(self.folder),
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
        spark_class = str(self.spark_home / "bin" / "spark-class")
        master = self.processes.start(
            "spark-master",
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(master_port),
                "--webui-port",
                str(free_port()),
            ],
            env,
        )
        url = f"spark://127.0.0.1:{master_port}"
        wait_for(
            "Spark's master",
            lambda: port_open("127.0.0.1", master_port),
            180,
            master.process,
            master.log,
        )
        worker = self.processes.start(
            "spark-worker",
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                url,
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "1g",
                "--webui-port",
                str(free_port()),
            ],
            env,
        )
        wait_for(
            "Spark's worker",
            lambda: "Successfully registered" in worker.log.read_text(),
            180,
            worker.process,
            worker.log,
        )
        self.start_pool(0)
        server = self.cache / "spark-job-server"
        # The executors load Beam's classes from the same jars (the launcher
        # jar's relative classpath does not travel to them).
        classpath = f"{server / 'lib'}/*:{self.spark_home / 'jars'}/*"
        job_server = self.processes.start(
            "job-server",
            [
                "java",
                "-Xmx768m",
                f"-Dspark.executor.extraClassPath={classpath}",
                "-Dspark.executor.memory=768m",
                "-jar",
                str(server / "spark-job-server.jar"),
                f"--spark-master-url={url}",
                "--job-host=127.0.0.1",
                f"--job-port={self.job_port}",
                "--artifact-port=0",
                "--expansion-port=0",
            ],
            os.environ,
        )
        wait_for(
            "Beam's Spark job server",
            lambda: port_open("127.0.0.1", self.job_port),
            180,
            job_server.process,
            job_server.log,
        )

    def stop(self) -> None:
        self.processes.stop_all()


def started_spark(folder: Path, env: Mapping[str, str]) -> Iterator[SparkCluster]:
    cache = ensure_cache()
    cluster = SparkCluster(cache, folder, env)
    try:
        install_project(cluster.venv, folder)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def cli_run(
    cluster: FlinkCluster | SparkCluster, args: Sequence[str | Path], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`profile-import ARGS` from the workers' environment; `run` gets the
    cluster's options. Past `timeout` the command gets SIGTERM (it cancels
    its job) and the test fails on its exit status."""
    argv = [*cluster.cli, *(str(a) for a in args)]
    if args and args[0] == "run":
        argv += cluster.run_args()
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.launch_env(),
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=120)
            err += f"\n(stopped after {timeout:.0f} s)"
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def started_flink(folder: Path, env: Mapping[str, str]) -> Iterator[FlinkCluster]:
    """A started Flink cluster, stopped (every process of it) when done."""
    cache = ensure_cache()
    cluster = FlinkCluster(cache, folder, env)
    try:
        install_project(cluster.venv, folder)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
