"""Inputs, rejects and reports on s3:// and gs:// (and http(s)://), against real
protocol servers on 127.0.0.1 (tests/object_servers.py)."""

from __future__ import annotations

import gzip
import http.server
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from profile_import.inputs.lines import read_lines
from profile_import.inputs.plan import InputError, expand, list_inputs
from profile_import.inputs.remote import literal_prefix, pattern_regex

from ...helpers import export, plan, run_cli, upsert, write_lines
from ...object_servers import get, new_bucket, put

pytestmark = pytest.mark.spec(section=1)


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("in/*.ndjson", "in/a.ndjson", True),
        ("in/*.ndjson", "in/sub/a.ndjson", False),  # `*` stops at `/`, as locally
        ("in/*.ndjson", "in/a.ndjson.gz", False),
        ("in/day-?.ndjson", "in/day-1.ndjson", True),
        ("in/day-?.ndjson", "in/day-10.ndjson", False),
        ("in/day-[12].ndjson", "in/day-2.ndjson", True),
        ("in/day-[!12].ndjson", "in/day-2.ndjson", False),
        ("in/day-[!12].ndjson", "in/day-3.ndjson", True),
        ("in/*/x.gz", "in/2026/x.gz", True),
        ("in/a+b(1).ndjson", "in/a+b(1).ndjson", True),  # regex characters are literal
    ],
)
def test_pattern_regex(pattern: str, key: str, matches: bool) -> None:
    assert bool(pattern_regex(pattern).match(key)) is matches


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [("in/*.ndjson", "in/"), ("in/day-?.nd", "in/day-"), ("a/b.ndjson", "a/b.ndjson"), ("*", "")],
)
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


LINES = [json.dumps(upsert({"email_hash": f"h{i}"}, {"n": i})) for i in range(40)]
DATA = ("\n".join(LINES) + "\n").encode()


def test_globs_list_sorted_objects_with_their_sizes(object_scheme: str) -> None:
    base = f"{object_scheme}://{new_bucket(object_scheme)}"
    for key in ("in/b.ndjson", "in/a.ndjson", "in/c.ndjson.gz", "in/sub/d.ndjson", "other.ndjson"):
        put(f"{base}/{key}", gzip.compress(DATA) if key.endswith(".gz") else DATA)
    assert expand([f"{base}/in/*.ndjson"]) == [f"{base}/in/a.ndjson", f"{base}/in/b.ndjson"]
    assert expand([f"{base}/in/*", f"{base}/other.ndjson"]) == [
        f"{base}/in/a.ndjson",
        f"{base}/in/b.ndjson",
        f"{base}/in/c.ndjson.gz",
        f"{base}/other.ndjson",
    ]
    files = list_inputs(expand([f"{base}/in/*"]))
    assert [(f.size, f.compression) for f in files] == [
        (len(DATA), None),
        (len(DATA), None),
        (len(gzip.compress(DATA)), "gzip"),
    ]
    assert all(f.modified_ns for f in files)
    with pytest.raises(InputError, match="matches no object"):
        expand([f"{base}/in/*.csv"])
    with pytest.raises(InputError, match="not found"):
        list_inputs([f"{base}/in/missing.ndjson"])
    put(f"{base}/in/hidden.ndjson", gzip.compress(DATA))
    with pytest.raises(InputError, match="gzip-compressed data"):
        list_inputs([f"{base}/in/hidden.ndjson"])


def test_plain_objects_are_read_in_ranges_like_local_files(
    object_scheme: str, tmp_path: Path
) -> None:
    url = f"{object_scheme}://{new_bucket(object_scheme)}/in/a.ndjson"
    put(url, DATA)
    local = tmp_path / "a.ndjson"
    local.write_bytes(DATA)
    _, remote_splits = plan([url], split_bytes=300)
    _, local_splits = plan([str(local)], split_bytes=300)
    assert len(remote_splits) == len(DATA) // 300 + 1 > 1
    assert [(s.start, s.end, s.first_line) for s in remote_splits] == [
        (s.start, s.end, s.first_line) for s in local_splits
    ]
    lines = [(n, c) for s in remote_splits for n, c, _ in read_lines(s, 1 << 20)]
    assert lines == [(i + 1, line.encode()) for i, line in enumerate(LINES)]


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves DATA at any path, with byte ranges, as a web server or CDN does."""

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        start, end = 0, len(DATA)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(end, int(match[2]) + 1) if match[2] else end
        self.send_response(206 if match else 200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(DATA)}")
        self.end_headers()
        if body:
            self.wfile.write(DATA[start:end])

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_inputs_are_read_in_ranges() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/exports/a.ndjson"
        files = list_inputs([url])
        assert files[0].size == len(DATA)
        _, splits = plan([url], split_bytes=500)
        assert len(splits) > 1
        lines = [(n, c) for s in splits for n, c, _ in read_lines(s, 1 << 20)]
        assert lines == [(i + 1, line.encode()) for i, line in enumerate(LINES)]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_run_with_inputs_rejects_and_report_in_a_bucket(object_scheme: str, tmp_path: Path) -> None:
    base = f"{object_scheme}://{new_bucket(object_scheme)}"
    first: list[str | dict[str, Any]] = [upsert({"email_hash": "a"}, {"n": 1}), "not json"]
    second: list[str | dict[str, Any]] = [
        upsert({"email_hash": "a"}, {"m": 2}),
        upsert({"user_agent_id": "u"}, {"k": 1}),
    ]
    put(f"{base}/in/day-1.ndjson", (write_lines(tmp_path / "1", first)).read_bytes())
    compressed = gzip.compress(write_lines(tmp_path / "2", second).read_bytes())
    put(f"{base}/in/day-2.ndjson.gz", compressed)
    store = tmp_path / "store"
    args = ["--rejects", f"{base}/out/rejects.ndjson", "--report", f"{base}/out/report.json"]
    result = run_cli("run", "--store", store, *args, "--split-bytes", "64", f"{base}/in/*")
    assert result.returncode == 0, result.stderr
    report = json.loads(get(f"{base}/out/report.json"))
    assert report["status"] == "SUCCEEDED_WITH_ERRORS"
    assert [i["path"] for i in report["inputs"]] == [
        f"{base}/in/day-1.ndjson",
        f"{base}/in/day-2.ndjson.gz",
    ]
    assert report["counts"]["accepted"] == 3
    rejects = [json.loads(line) for line in get(f"{base}/out/rejects.ndjson").splitlines()]
    assert [(r["file"], r["line"], r["code"]) for r in rejects] == [
        (f"{base}/in/day-1.ndjson", 2, "INVALID_JSON")
    ]
    profiles = {p.get("email_hash") or p["user_agent_id"]: p["user_profile"] for p in export(store)}
    assert profiles == {"a": {"n": 1, "m": 2}, "u": {"k": 1}}
