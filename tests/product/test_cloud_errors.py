"""Every failure of S3 or GCS is one line on stderr, cause first, exit 1 or 2:
no credentials, credentials refused, access denied, a missing bucket, an
endpoint nobody listens on, a server that stops mid-run. Against real
protocol servers (tests/object_servers.py), and private ones where a test
stops its server or needs S3's authentication."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from profile_import.stores import failpoints
from profile_import.stores.lease import ENV as LEASE_ENV

from ..helpers import CLI, read_cli, run_cli, upsert, write_lines
from ..object_servers import (
    S3_ENV,
    StoppablePort,
    _free_port,
    _gcs_binary,
    _wait_http,
    new_bucket,
    put,
)

LINES = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(5)]


def one_error_line(stderr: str) -> str:
    """The run's error: the only `error:` line, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("profile-import: error: "), stderr
    return errors[0]


def cli(*args: str | Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str, float]:
    """`profile-import ARGS` in a new process with `env`; (status, stderr, seconds)."""
    begun = time.monotonic()
    result = subprocess.run(
        [*CLI, *(str(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - begun


READERS = [
    ("export",),
    ("versions",),
    ("verify",),
    ("list",),
    ("get", "--email-hash", "h1"),
]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r[0])
def test_reading_a_store_in_a_missing_bucket(object_scheme: str, reader: tuple[str, ...]) -> None:
    store = f"{object_scheme}://no-such-bucket-here/store"
    result = read_cli(*reader, "--store", store)
    line = one_error_line(result.stderr)
    assert result.returncode == 1
    assert line.startswith(f"profile-import: error: store {store}: ")
    assert line.endswith("bucket no-such-bucket-here does not exist"), line


@pytest.mark.slow
def test_a_run_names_the_missing_bucket_of_its_store_input_and_outputs(
    object_scheme: str, tmp_path: Path
) -> None:
    base = f"{object_scheme}://{new_bucket(object_scheme)}"
    missing = f"{object_scheme}://no-such-bucket-here"
    data = write_lines(tmp_path / "in.ndjson", LINES)
    put(f"{base}/in.ndjson", data.read_bytes())
    local = tmp_path / "store"
    cases: list[tuple[tuple[str | Path, ...], str]] = [
        (("--store", f"{missing}/store", data), f"store {missing}/store"),
        (("--store", local, f"{missing}/in.ndjson"), f"input {missing}/in.ndjson"),
        (("--store", local, "--report", f"{missing}/r.json", data), f"--report {missing}/r.json"),
        (("--store", local, "--rejects", f"{missing}/x.ndjson", data), f"--rejects {missing}"),
    ]
    for args, names in cases:
        result = run_cli("run", "--quiet", *args)
        line = one_error_line(result.stderr)
        assert result.returncode == 2, result.stderr  # nothing ran
        assert f"error: {names}" in line, line
        assert "bucket no-such-bucket-here does not exist" in line, line
        assert not local.exists()
    # The same run with every location in a bucket that exists succeeds.
    outs = ("--report", f"{base}/r.json", "--rejects", f"{base}/x.ndjson")
    result = run_cli("run", "--quiet", "--store", f"{base}/store", *outs, f"{base}/in.ndjson")
    assert result.returncode == 0, result.stderr


def _no_server_env(scheme: str) -> dict[str, str]:
    """The environment with the scheme's endpoint on a port nobody listens on."""
    nobody = f"http://127.0.0.1:{_free_port()}"
    variable = "AWS_ENDPOINT_URL" if scheme == "s3" else "STORAGE_EMULATOR_HOST"
    return {**os.environ, **S3_ENV, variable: nobody}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_an_endpoint_nobody_listens_on_fails_in_seconds(scheme: str, tmp_path: Path) -> None:
    env = _no_server_env(scheme)
    data = write_lines(tmp_path / "in.ndjson", LINES)
    runs = [
        ("versions", "--store", f"{scheme}://bucket/store"),
        ("run", "--quiet", "--store", f"{scheme}://bucket/store", data),
        ("run", "--quiet", "--store", tmp_path / "store", f"{scheme}://bucket/in.ndjson"),
    ]
    for args in runs:
        code, stderr, seconds = cli(*args, env=env)
        line = one_error_line(stderr)
        assert code in (1, 2), stderr
        service = "S3" if scheme == "s3" else "GCS"
        assert f"cannot reach {service} at http://127.0.0.1:" in line, line
        assert seconds < 30, (seconds, args)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_no_credentials(scheme: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_"))}
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"),
    )
    code, stderr, _ = cli("versions", "--store", f"{scheme}://bucket/store", env=env)
    line = one_error_line(stderr)
    assert code == 1
    if scheme == "s3":
        assert "no S3 credentials found: set AWS_ACCESS_KEY_ID" in line, line
    else:
        assert "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS" in line


@pytest.fixture
def s3_with_auth() -> Iterator[tuple[str, str, str]]:
    """A private S3 server that checks credentials, a bucket on it, and the
    keys of a user with no permission: (endpoint, bucket, "KEY SECRET")."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # Its first three requests (making the user, their keys and the bucket)
    # are let through unchecked; every later one is authenticated.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"{endpoint}/moto-api/")
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint, **_boto_keys())
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket="locked")
        yield endpoint, "locked", f"{key['AccessKeyId']} {key['SecretAccessKey']}"
    finally:
        server.terminate()
        server.wait(10)


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.mark.slow
def test_s3_credentials_refused_and_access_denied(
    s3_with_auth: tuple[str, str, str], tmp_path: Path
) -> None:
    endpoint, bucket, keys = s3_with_auth
    key, secret = keys.split()
    base = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    data = write_lines(tmp_path / "in.ndjson", LINES)
    unknown = {**base, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN0000000000"}
    wrong_secret = {**base, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "wrong"}
    denied = {**base, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    store = f"s3://{bucket}/store"
    for env, cause in [
        (unknown, "S3 refused the credentials (InvalidAccessKeyId)"),
        (wrong_secret, "S3 refused the credentials (SignatureDoesNotMatch)"),
        (denied, f"S3 denied access to bucket {bucket} (AccessDenied)"),
    ]:
        for args in [
            ("versions", "--store", store),
            ("run", "--quiet", "--store", store, data),
        ]:
            code, stderr, _ = cli(*args, env=env)
            assert cause in one_error_line(stderr), (args, stderr)
            assert code in (1, 2)
        # An input is first asked for its size, and an output's bucket whether
        # it exists (HEAD): an answer without a body, that cannot tell refused
        # credentials from a denial.
        for args, names in [
            ((f"s3://{bucket}/in.ndjson",), f"input s3://{bucket}/in.ndjson: cannot be read: "),
            (("--report", f"{store}/r.json", data), f"--report {store}/r.json: cannot write: "),
        ]:
            code, stderr, _ = cli("run", "--quiet", "--store", tmp_path / "s", *args, env=env)
            line = one_error_line(stderr)
            assert f"{names}S3 denied access to bucket {bucket} (403: wrong credentials" in line
            assert code == 2
    assert not (tmp_path / "s").exists()


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Answers every sign-in as Google's token endpoint answers a revoked or
    unknown service-account key (the GCS test server checks no credentials)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_gcs_credentials_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pem = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            .decode()
        )
        account = {
            "type": "service_account",
            "project_id": "test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "importer@test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"http://127.0.0.1:{server.server_address[1]}/token",
        }
        credentials = tmp_path / "account.json"
        credentials.write_text(json.dumps(account))
        env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
        code, stderr, _ = cli("versions", "--store", "gs://bucket/store", env=env)
    finally:
        server.shutdown()
        server.server_close()
    line = one_error_line(stderr)
    assert code == 1
    assert "Google Cloud refused the credentials: " in line and "invalid_grant" in line, line


def _private_server(scheme: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A private S3 or GCS server (so a test may stop it) and the environment for it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if scheme == "s3":
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": endpoint}
        probe = f"{endpoint}/moto-api/"
    else:
        argv = [str(_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
        argv += ["-backend", "memory"]
        env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint}
        probe = f"{endpoint}/storage/v1/b"
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(probe)
    return server, env


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_server_that_stops_mid_run(scheme: str, tmp_path: Path) -> None:
    """A run waiting for its store's lease (held by another run) when the
    server stops fails in one line within seconds, and changes nothing."""
    server, env = _private_server(scheme)
    try:
        holder = subprocess.run(
            [sys.executable, "-c", _MAKE_BUCKET, scheme],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        store = f"{scheme}://{holder.stdout.strip()}/store"
        data = write_lines(tmp_path / "in.ndjson", LINES)
        # Another run holds the store: a process that takes its lease and waits.
        lease = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LEASE, store],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert lease.stdout is not None
        assert lease.stdout.readline().strip() == "held"
        waiting = subprocess.Popen(
            [*CLI, "run", "--store", store, "--lock-timeout", "120", data],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert waiting.stderr is not None
        seen = ""
        while "waiting for the store lock: started" not in seen:
            line = waiting.stderr.readline()
            assert line, seen
            seen += line
        time.sleep(0.5)  # it polls the lease
        server.kill()
        server.wait(10)
        stopped = time.monotonic()
        code = waiting.wait(120)
        seconds = time.monotonic() - stopped
        stderr = seen + waiting.stderr.read()
    finally:
        for process in ("lease", "server"):
            running = locals().get(process)
            if running is not None and running.poll() is None:
                running.send_signal(signal.SIGKILL)
                running.wait(10)
    line = one_error_line(stderr)
    assert code == 1, stderr
    service = "S3" if scheme == "s3" else "GCS"
    assert f"error: store {store}: cannot reach {service} at http://127.0.0.1:" in line, line
    assert seconds < 30, seconds


def _stoppable_server(scheme: str) -> tuple[subprocess.Popen[bytes], StoppablePort, dict[str, str]]:
    """A private server, and the environment that reaches it through a port
    the test may stop and start again (`StoppablePort`): the server keeps
    its objects while it is away."""
    server, direct = _private_server(scheme)
    variable = "AWS_ENDPOINT_URL" if scheme == "s3" else "STORAGE_EMULATOR_HOST"
    port = StoppablePort(int(direct[variable].rsplit(":", 1)[1]))
    return server, port, {**direct, variable: f"http://127.0.0.1:{port.port}"}


@pytest.mark.slow
@pytest.mark.parametrize("point", [failpoints.READING, failpoints.DATA_WRITTEN])
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_server_that_stops_while_a_run_reads_or_publishes(
    scheme: str, point: str, tmp_path: Path
) -> None:
    """The store's server stops while the run reads its input there, or while
    it publishes: one line, cause first, exit 1; once the server is back the
    store is as it was before the run, and the same run again completes."""
    server, port, env = _stoppable_server(scheme)
    # What the failed run could not release ends soon: the rerun waits for it.
    env[LEASE_ENV] = "3"
    try:
        made = subprocess.run(
            [sys.executable, "-c", _MAKE_BUCKET, scheme],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        bucket = made.stdout.strip()
        store = f"{scheme}://{bucket}/store"
        seed = write_lines(tmp_path / "seed.ndjson", LINES)
        assert cli("run", "--store", store, seed, env=env)[0] == 0
        before = cli_out("export", "--store", store, env=env)
        day = f"{scheme}://{bucket}/in/day.ndjson"
        later = [upsert({"email_hash": f"h{i}"}, {"later": i}) for i in range(3, 8)]
        subprocess.run(
            [sys.executable, "-c", _PUT, day, str(write_lines(tmp_path / "day.ndjson", later))],
            env=env,
            timeout=60,
            check=True,
        )
        pause = tmp_path / "pause"
        pause.mkdir()
        report = tmp_path / "report.json"
        run = subprocess.Popen(
            [*CLI, "run", "--store", store, "--report", str(report), day],
            env={**env, **failpoints.pause_at(point, str(pause))},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not (pause / failpoints.PAUSED).exists():
            assert run.poll() is None and time.monotonic() < deadline, run.stderr
            time.sleep(0.05)
        port.stop()
        (pause / failpoints.RESUME).touch()
        _, stderr = run.communicate(timeout=120)
        port.start()
        line = one_error_line(stderr)
        assert run.returncode == 1, stderr
        service = "S3" if scheme == "s3" else "GCS"
        assert f"cannot reach {service} at http://127.0.0.1:{port.port}" in line, line
        assert json.loads(report.read_text())["status"] == "FAILED"
        # The server back: the store as before the run, sound, and the run again completes.
        assert cli_out("export", "--store", store, env=env) == before
        assert cli("verify", "--store", store, env=env)[0] == 0
        code, stderr, _ = cli("run", "--store", store, "--lock-timeout", "60", day, env=env)
        assert code == 0, stderr
        after = [json.loads(p) for p in cli_out("export", "--store", store, env=env).splitlines()]
        assert sorted(p["user_profile"].get("later", -1) for p in after) == [
            -1,
            -1,
            -1,
            3,
            4,
            5,
            6,
            7,
        ]
    finally:
        port.stop()
        server.kill()
        server.wait(10)
        if "run" in locals() and run.poll() is None:
            run.kill()
            run.wait(10)


def cli_out(*args: str | Path, env: dict[str, str]) -> str:
    """The standard output of `profile-import ARGS`, which must succeed."""
    result = subprocess.run(
        [*CLI, *(str(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


_PUT = """
import sys
scheme, rest = sys.argv[1].split("://", 1)
bucket, key = rest.split("/", 1)
data = open(sys.argv[2], "rb").read()
if scheme == "s3":
    import boto3
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
else:
    from google.cloud import storage
    storage.Client(project="test").bucket(bucket).blob(key).upload_from_string(data)
"""

_MAKE_BUCKET = """
import sys, uuid
name = f"test-{uuid.uuid4().hex[:12]}"
if sys.argv[1] == "s3":
    import boto3
    boto3.client("s3").create_bucket(Bucket=name)
else:
    from google.cloud import storage
    storage.Client(project="test").create_bucket(name)
print(name)
"""

_HOLD_LEASE = """
import sys, time
from profile_import.stores.folders import open_files
with open_files(sys.argv[1]).lock(5, "the store"):
    print("held", flush=True)
    time.sleep(600)
"""
