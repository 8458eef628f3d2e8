"""The local runner's worker processes, watched: one that dies fails the run.

Beam's FnApiRunner starts each worker process from a thread that waits for it
(`SubprocessSdkWorkerHandler`), and nothing tells the runner when one dies: a
worker the kernel kills for memory, or a `kill -9`, leaves the runner waiting
for its answer for ever, while the launcher holds the store's lock. Beam
watches its Docker workers (`DockerSdkWorkerHandler.watch_container`): when a
container dies, the instructions in flight on its control connection fail.
These workers get the same, as an environment of their own (`WatchedWorkers`):

- each worker is started without a shell, so the process waited for is the
  worker itself, and its end (a signal, an exit status) is known at once;
- a worker that ends while the runner still uses it fails every instruction
  sent to it, and every one sent to it later, with `WorkerDied`, naming the
  process and how it ended;
- the run's other workers are stopped: the run is lost, and Beam, unwinding,
  would otherwise wait for their bundles to end.

So the pipeline fails within a second, and the launcher discards the run and
releases the store's lock (`runners.execution`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, suppress
from typing import Any, ClassVar

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
from apache_beam.runners.portability.local_job_service import BeamFnLoggingServicer
from apache_beam.transforms import environments
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

from .fork_server import Forked, ForkServer
from .local_worker import VERBOSE_ENV

URN = "profile_import:env:watched_subprocess:v1"
# How often a dead worker's control connection fails what was sent to it since.
_ABORT_EVERY_SECONDS = 0.1
_OUT_OF_MEMORY_HINT = "out of memory, or kill -9"


class WorkerDied(RuntimeError):
    """A worker process of the local runner ended while its run used it."""


# Every worker death in this process, oldest first.
_DEATHS: list[WorkerDied] = []


class Watch:
    """The first worker death from now on: what a pipeline that failed
    meanwhile failed of, whatever error Beam raised for it (its data plane
    may see the broken stream before the death is known)."""

    def __init__(self) -> None:
        self._seen = len(_DEATHS)

    @property
    def death(self) -> WorkerDied | None:
        return _DEATHS[self._seen] if len(_DEATHS) > self._seen else None

    def death_within(self, seconds: float) -> WorkerDied | None:
        """The first death, waiting up to `seconds` for one: Beam may see a
        dead worker's broken stream before the thread that waits for the
        worker hears of its end (on a busy machine, noticeably before)."""
        deadline = time.monotonic() + seconds
        while self.death is None and time.monotonic() < deadline:
            time.sleep(_ABORT_EVERY_SECONDS / 5)
        return self.death


def how_it_ended(returncode: int) -> str:
    """`killed by SIGKILL (...)` or `exited with status N`, from a return code."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = f" ({_OUT_OF_MEMORY_HINT})" if -returncode == signal.SIGKILL else ""
    return f"was killed by {name}{hint}"


@environments.Environment.register_urn(URN, bytes)
class WatchedWorkers(environments.SubprocessSDKEnvironment):
    """Beam's subprocess environment, watched; its command is the token of
    the fork server that starts its workers (`fork_server.ForkServer`)."""

    def to_runner_api_parameter(self, context: Any) -> tuple[str, bytes]:
        return URN, self.command_string.encode("utf-8")

    @staticmethod
    def from_runner_api_parameter(
        payload: bytes,
        capabilities: Iterable[str],
        artifacts: Iterable[Any],
        resource_hints: Mapping[str, bytes],
        context: Any,
    ) -> WatchedWorkers:
        return WatchedWorkers(payload.decode("utf-8"), capabilities, artifacts, resource_hints)


class _NotForWatchedWorkers(logging.Filter):
    """Beam's advice to set `--direct_running_mode=multi_processing` for more than
    one worker: it knows only its own worker processes, and these are processes too."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


class WatchedRunner(fn_runner.FnApiRunner):
    """The local runner on watched workers, without Beam's advice that does not
    apply to them (a caller whose logging is not set up would see it on stderr)."""

    _advice = _NotForWatchedWorkers()

    def __init__(self) -> None:
        self._forks = ForkServer()
        # The environment names the fork server that starts its workers.
        super().__init__(default_environment=WatchedWorkers.from_command_string(self._forks.token))

    def serving_forks(self, from_here: bool) -> AbstractContextManager[ForkServer]:
        """The fork server, started now and kept for the runs within
        (`ForkServer.running`)."""
        return self._forks.running(from_here)

    def run_pipeline(self, pipeline: Any, options: Any) -> Any:
        log = logging.getLogger(fn_runner.__name__)
        log.addFilter(self._advice)
        try:
            with self._forks.running():
                return super().run_pipeline(pipeline, options)
        finally:
            log.removeFilter(self._advice)


class _Run:
    """The workers of one run (those of one control server), and its first fault."""

    _by_address: ClassVar[dict[str, _Run]] = {}
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.handlers: set[_WatchedWorkerHandler] = set()
        self.fault: WorkerDied | None = None

    @classmethod
    def of(cls, handler: _WatchedWorkerHandler) -> _Run:
        with cls._lock:
            run = cls._by_address.setdefault(handler.control_address, _Run())
            run.handlers.add(handler)
            return run

    def leave(self, handler: _WatchedWorkerHandler) -> None:
        with self._lock:
            self.handlers.discard(handler)
            if not self.handlers:
                _Run._by_address.pop(handler.control_address, None)

    def failed(self, fault: WorkerDied) -> WorkerDied:
        """The run's fault (the first worker's end); the other workers are stopped."""
        with self._lock:
            first = self.fault is None
            if first:
                self.fault = fault
            others = [h for h in self.handlers if h.process is not None]
        if first:
            _DEATHS.append(fault)
            for handler in others:
                handler.kill()
        assert self.fault is not None
        return self.fault


@worker_handlers.WorkerHandler.register_environment(URN, bytes)
class _WatchedWorkerHandler(worker_handlers.SubprocessSdkWorkerHandler):
    """Starts its worker as Beam's `SubprocessSdkWorker` does (a logging
    server, the worker's environment variables), forked by its run's fork
    server (`fork_server`), and watches it (see the module doc)."""

    process: Forked | None = None

    def start_worker(self) -> None:
        _quiet_broken_streams()
        self._closing = threading.Event()
        self._run = _Run.of(self)
        self.worker_thread = threading.Thread(
            name="run_worker", target=self._run_worker, daemon=True
        )
        self.worker_thread.start()

    def close(self) -> None:
        # From here on the worker is meant to end: its end is no fault.
        self._closing.set()
        super().close()

    def stop_worker(self) -> None:
        self._closing.set()
        self.worker_thread.join()
        self._run.leave(self)

    def kill(self) -> None:
        process = self.process
        if process is not None:
            with suppress(OSError):
                process.kill()

    def _run_worker(self) -> None:
        logging_server = grpc.server(
            thread_pool_executor.shared_unbounded_instance(),
            options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
        )
        logging_port = logging_server.add_insecure_port("[::]:0")
        logging_server.start()
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(
            BeamFnLoggingServicer(), logging_server
        )
        env = dict(
            os.environ,
            CONTROL_API_SERVICE_DESCRIPTOR=_descriptor(self.control_address),
            LOGGING_API_SERVICE_DESCRIPTOR=_descriptor(f"localhost:{logging_port}"),
            PIPELINE_OPTIONS=json_format.MessageToJson(
                self.provision_info.provision_info.pipeline_options
            ),
        )
        if self.worker_id:
            env["WORKER_ID"] = self.worker_id
        try:
            server = ForkServer.of(self._worker_command_line.decode("utf-8"))
            with worker_handlers.SUBPROCESS_LOCK:
                self.process = server.fork(env)
            returncode = self.process.wait()
            # Closed, a worker ends with status 0: any other end is a death,
            # even one that came as the runner closed it.
            if returncode or not self._closing.is_set():
                worker = f"worker process {self.process.pid} of the local runner"
                ended = self.process.server_end or f"{worker} {how_it_ended(returncode)}"
                self._fail(WorkerDied(ended))
        except OSError as e:
            self._fail(WorkerDied(f"a worker process of the local runner could not start: {e}"))
        finally:
            self.kill()
            logging_server.stop(0)

    def _fail(self, ended: WorkerDied) -> None:
        """Fails what the runner sent this dead worker, and sends it, until it closes it."""
        fault = self._run.failed(ended)
        while not self._closing.is_set():
            # The runner's threads may add instructions meanwhile: tried again.
            with suppress(RuntimeError):
                _fail_instructions(self.control_conn, fault)
            time.sleep(_ABORT_EVERY_SECONDS)


def _fail_instructions(control: worker_handlers.ControlConnection, fault: WorkerDied) -> None:
    """Fails the instructions in flight on a dead worker's control connection.

    Each gets an answer with an error, as a failing bundle's: the runner, which
    waits for a bundle's data until its answer comes, stops waiting then
    (`abort` alone fails only those who wait for the answer itself). Then each
    is aborted, so the error raised is `fault` itself.
    """
    in_flight = list(getattr(control, "_futures_by_id", {}).values())
    for future in in_flight:
        if not future.is_done():
            answer = beam_fn_api_pb2.InstructionResponse(
                instruction_id=future.instruction_id, error=str(fault)
            )
            future.set(answer)
    control.abort(fault)


# Beam's threads that read a worker's gRPC streams: a dead worker's end with
# an error, which says less than `WorkerDied`.
_STREAM_READERS = ("beam_control_read", "read_grpc_client_inputs")


def _quiet_broken_streams() -> None:
    """The errors of Beam's threads reading a worker's broken streams are not
    printed (tracebacks on stderr, beside the run's one-line error), unless
    --verbose; every other thread's error still is."""
    previous = threading.excepthook
    if os.environ.get(VERBOSE_ENV) or getattr(previous, "quiets_broken_streams", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if not (name in _STREAM_READERS and isinstance(args.exc_value, grpc.RpcError)):
            previous(args)

    hook.quiets_broken_streams = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _descriptor(url: str) -> str:
    descriptor: str = text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))
    return descriptor
