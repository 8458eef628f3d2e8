"""`list` and `get --ids` on the database stores, through the command line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from ..helpers import run_cli, upsert, write_lines

pytestmark = pytest.mark.spec(section=5)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_list_and_get_ids_on_a_database_store(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "postgresql":
        request.getfixturevalue("postgres")
        store = f"postgresql:///postgres?table=reading_{uuid.uuid4().hex[:8]}"
    else:
        store = f"sqlite:///{tmp_path / 'p.db'}"
    people = {f"u{n}": {"age": 20 + 5 * n, "city": "Oslo" if n % 2 else "Rome"} for n in range(6)}
    src = write_lines(
        tmp_path / "a.ndjson", [upsert({"email_hash": h}, p) for h, p in people.items()]
    )
    ran = run_cli(
        "run", "--store", store, "--rejects", tmp_path / "r", "--report", tmp_path / "p", src
    )
    assert ran.returncode == 0, ran.stderr

    seen, cursor = [], None
    while True:
        args = ["list", "--store", store, "--where", "age gte 30", "--properties", "city"]
        args += ["--limit", "2", *(["--cursor", cursor] if cursor else [])]
        page = run_cli(*args)
        assert page.returncode == 0, page.stderr
        records = [json.loads(line) for line in page.stdout.splitlines()]
        assert all(set(r["user_profile"]) == {"city"} for r in records)
        seen += [r["email_hash"] for r in records]
        info = json.loads(page.stderr.splitlines()[-1])
        if not info["has_next"]:
            break
        cursor = info["next_cursor"]
    assert seen == ["u2", "u3", "u4", "u5"]  # age 30 and over, by identifier

    ids = write_lines(
        tmp_path / "ids.ndjson",
        [{"email_hash": "u4"}, {"email_hash": "nobody"}, {"email_hash": "u0"}],
    )
    got = run_cli("get", "--store", store, "--ids", ids)
    assert got.returncode == 0, got.stderr
    assert [json.loads(line)["email_hash"] for line in got.stdout.splitlines()] == ["u4", "u0"]
    assert json.loads(got.stderr.splitlines()[-1])["missing"] == 1
