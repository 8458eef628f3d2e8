"""One way to name a location (`core.locations`): the parser, then the
command line's stores, inputs and outputs named every accepted way, and
refused in one line otherwise, against the suite's S3 and GCS servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profile_import.core.locations import Location, LocationError, Role, is_remote, parse

from ...helpers import export, read_cli, run_cli, upsert, write_lines
from ...object_servers import get, new_bucket, put


@pytest.mark.parametrize(
    ("text", "role", "scheme", "bucket", "path", "url"),
    [
        ("in.ndjson", "input", "file", "", "in.ndjson", "in.ndjson"),
        ("data/in.ndjson", "input", "file", "", "data/in.ndjson", "data/in.ndjson"),
        ("./in.ndjson", "input", "file", "", "./in.ndjson", "./in.ndjson"),
        ("/abs/in.ndjson", "input", "file", "", "/abs/in.ndjson", "/abs/in.ndjson"),
        ("store/", "store", "file", "", "store/", "store/"),
        ("C:\\data\\in.ndjson", "input", "file", "", "C:\\data\\in.ndjson", "C:\\data\\in.ndjson"),
        ("C:/data/in.ndjson", "input", "file", "", "C:/data/in.ndjson", "C:/data/in.ndjson"),
        ("C://data/in.ndjson", "input", "file", "", "C://data/in.ndjson", "C://data/in.ndjson"),
        ("a:b.ndjson", "input", "file", "", "a:b.ndjson", "a:b.ndjson"),
        ("file:///abs/in.ndjson", "input", "file", "", "/abs/in.ndjson", "/abs/in.ndjson"),
        ("FILE:///abs/in.ndjson", "input", "file", "", "/abs/in.ndjson", "/abs/in.ndjson"),
        ("file:///abs/a%20b.ndjson", "output", "file", "", "/abs/a b.ndjson", "/abs/a b.ndjson"),
        ("file://localhost/abs/r.json", "output", "file", "", "/abs/r.json", "/abs/r.json"),
        ("file://profile-store", "store", "file", "", "profile-store", "profile-store"),
        ("file:///abs/store/", "store", "file", "", "/abs/store/", "/abs/store/"),
        ("s3://b/in/x.ndjson", "input", "s3", "b", "in/x.ndjson", "s3://b/in/x.ndjson"),
        ("S3://b/in/x.ndjson", "input", "s3", "b", "in/x.ndjson", "s3://b/in/x.ndjson"),
        ("gs://b/in/*.ndjson", "input", "gs", "b", "in/*.ndjson", "gs://b/in/*.ndjson"),
        ("gcs://b/in/x.ndjson", "input", "gs", "b", "in/x.ndjson", "gs://b/in/x.ndjson"),
        ("gcs://b/r.json", "output", "gs", "b", "r.json", "gs://b/r.json"),
        ("s3://b", "store", "s3", "b", "", "s3://b/"),
        ("s3://b/", "store", "s3", "b", "", "s3://b/"),
        ("gcs://b/stores/p/", "store", "gs", "b", "stores/p/", "gs://b/stores/p/"),
        ("https://h.example/x.ndjson", "input", "https", "h.example", "", None),
        ("http://127.0.0.1:8/x.ndjson", "input", "http", "127.0.0.1:8", "", None),
        ("sqlite:///profiles.db", "store", "sqlite", "", "profiles.db", None),
        ("sqlite:////abs/profiles.db", "store", "sqlite", "", "/abs/profiles.db", None),
        ("postgresql:///db?table=t", "store", "postgresql", "", "", None),
        ("postgres://u@h:5432/db", "store", "postgresql", "", "", None),
    ],
)
def test_every_accepted_spelling_parses_to_one_value(
    text: str, role: Role, scheme: str, bucket: str, path: str, url: str | None
) -> None:
    location = parse(text, role)
    assert (location.scheme, location.bucket, location.path) == (scheme, bucket, path)
    assert location.url == (text if url is None else url)
    assert location.given == str(location) == text  # the user's spelling, for messages
    assert location.is_local is (scheme == "file")
    assert location.is_object is (scheme in ("s3", "gs"))
    assert location.is_remote is (scheme in ("s3", "gs", "https", "http"))
    assert location.is_database is (scheme in ("sqlite", "postgresql"))
    assert parse(text) == location  # a role only refuses; it never reads differently
    assert is_remote(text) is location.is_remote


@pytest.mark.parametrize(
    ("text", "role", "message"),
    [
        ("", "input", "an empty location"),
        ("ftp://h/x.ndjson", "input", "the ftp:// scheme is not supported; use a path,"),
        ("ftp://x", "output", "the ftp:// scheme is not supported; use a path, file://, s3://"),
        ("ftp://x", "store", "the ftp:// scheme is not supported; use a folder"),
        ("hdfs://nn/x", None, "the hdfs:// scheme is not supported"),
        ("https://h/r.json", "output", "https:// cannot name an output"),
        ("http://h/r.json", "output", "http:// cannot name an output"),
        ("https://h/store", "store", "https:// cannot name a store"),
        ("sqlite:///p.db", "input", "sqlite:// cannot name an input"),
        ("postgresql:///db", "output", "postgresql:// cannot name an output"),
        ("s3://", "store", "no bucket name: write s3://BUCKET/KEY"),
        ("gcs:///key", "input", "no bucket name: write gcs://BUCKET/KEY"),
        ("s3://my bucket/k", "output", "'my bucket' is not a bucket name"),
        ("s3://b", "output", "an output names an object: s3://BUCKET/KEY"),
        ("gs://b/folder/", "output", "an output names an object"),
        ("gs://b/", "input", "an input names an object"),
        ("s3:/b/key", "input", "write s3://..., with two slashes"),
        ("gs:b/key", "output", "write gs://..., with two slashes"),
        ("https://", "input", "no host: write https://HOST/PATH"),
        ("file://", "output", "file:// names no file"),
        ("sqlite://p.db", "store", "write sqlite:///relative.db or sqlite:////absolute.db"),
        ("sqlite:///", "store", "write sqlite:///relative.db"),
    ],
)
def test_what_no_role_can_use_is_one_line(text: str, role: Role | None, message: str) -> None:
    with pytest.raises(LocationError) as raised:
        parse(text, role)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_glob_match_is_spelled_as_its_pattern() -> None:
    pattern = parse("gcs://b/in/*.ndjson", "input")
    match = pattern.with_key("in/a.ndjson")
    assert match == Location("gcs://b/in/a.ndjson", "gs", "b", "in/a.ndjson")
    assert match.url == "gs://b/in/a.ndjson"


# --- the command line ---------------------------------------------------------

LINES = [upsert({"email_hash": f"h{i}"}, {"n": i}) for i in range(5)] + ["not json"]


def _one_error(stderr: str, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("profile-import: error: ") and needle in lines[0], stderr


def test_a_file_url_input_store_report_and_rejects(tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in put.ndjson", LINES)
    url = "file://" + str(data).replace(" ", "%20")
    store, report, rejects = tmp_path / "store", tmp_path / "r.json", tmp_path / "bad.ndjson"
    result = run_cli(
        "run", url, "--store", f"file://{store}",
        "--report", f"file://{report}", "--rejects", f"file://{rejects}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = json.loads(report.read_text())
    assert written["counts"]["rejected"] == 1
    assert [i["path"] for i in written["inputs"]] == [url]  # as the user named it
    assert len(rejects.read_text().splitlines()) == 1
    assert len(export(store)) == 5
    # The same file by its path is the same input: applied already.
    again = run_cli("run", data, "--store", store, "--report", report)
    assert again.returncode == 0 and json.loads(report.read_text())["status"] == "ALREADY_APPLIED"


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--report", "https://example.com/r.json", "--report https://example.com/r.json: https://"),
        ("--rejects", "ftp://x", "--rejects ftp://x: the ftp:// scheme is not supported"),
        ("--changes", "https://h/c.ndjson", "--changes https://h/c.ndjson: https:// cannot"),
        ("--store", "ftp://x/store", "store ftp://x/store: the ftp:// scheme is not supported"),
        ("--store", "https://x/store", "store https://x/store: https:// cannot name a store"),
        ("--rejects", "s3://b", "--rejects s3://b: an output names an object"),
        ("--report", "gs:/b/r.json", "--report gs:/b/r.json: write gs://..., with two slashes"),
        ("INPUT", "ftp://x/in.ndjson", "input ftp://x/in.ndjson: the ftp:// scheme"),
    ],
)
def test_a_location_no_run_can_use_is_refused_before_anything_runs(
    tmp_path: Path, option: str, value: str, needle: str
) -> None:
    data = write_lines(tmp_path / "in.ndjson", LINES)
    store = tmp_path / "store"
    args = [value] if option == "INPUT" else [data, option, value]
    if option != "--store":
        args += ["--store", store]
    result = run_cli("run", *args)
    assert result.returncode == 2
    _one_error(result.stderr, needle)
    assert result.stdout == "" and not store.exists()  # nothing ran, no report


@pytest.mark.parametrize("option", ["--report", "--rejects"])
def test_an_https_output_is_refused_in_one_line(option: str, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.ndjson", LINES)
    result = read_cli("export", "--store", tmp_path, "--output", "https://example.com/o.ndjson")
    assert result.returncode == 2
    _one_error(result.stderr, "export --output https://example.com/o.ndjson: https:// cannot")
    result = run_cli("run", data, "--store", tmp_path / "s", option, "http://h/o.json")
    assert result.returncode == 2
    _one_error(result.stderr, f"{option} http://h/o.json: http:// cannot name an output")


@pytest.mark.slow
def test_a_gcs_store_and_input_with_gcs_globs(gcs_endpoint: str, tmp_path: Path) -> None:
    bucket = new_bucket("gs")
    for name in ("b", "a"):
        put(
            f"gs://{bucket}/in/{name}.ndjson",
            ("\n".join(map(json.dumps, LINES[:5])) + "\n").encode(),
        )
    store = f"gcs://{bucket}/stores/p"
    report = tmp_path / "r.json"
    result = run_cli("run", f"gcs://{bucket}/in/*.ndjson", "--store", store, "--report", report)
    assert result.returncode == 0, result.stderr
    written = json.loads(report.read_text())
    assert written["status"] == "SUCCEEDED" and written["version"] == 1
    # The glob's objects as the user spelled the pattern.
    assert [i["path"] for i in written["inputs"]] == [
        f"gcs://{bucket}/in/a.ndjson",
        f"gcs://{bucket}/in/b.ndjson",
    ]
    # The same store by its other name.
    assert len(export(store)) == len(export(f"gs://{bucket}/stores/p")) == 5
    assert read_cli("verify", "--store", store).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("spelled", ["s3", "gs", "gcs"])
@pytest.mark.parametrize("format", ["ndjson", "parquet"])
def test_export_to_a_bucket(
    spelled: str, format: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scheme = "s3" if spelled == "s3" else "gs"
    request.getfixturevalue("s3_endpoint" if scheme == "s3" else "gcs_endpoint")
    data = write_lines(tmp_path / "in.ndjson", LINES[:5])
    store = tmp_path / "store"
    assert run_cli("run", data, "--store", store).returncode == 0
    bucket = new_bucket(scheme)
    local = tmp_path / f"out.{format}"
    assert (
        read_cli("export", "--store", store, "--format", format, "--output", local).returncode == 0
    )
    result = read_cli(
        "export",
        "--store",
        store,
        "--format",
        format,
        "--output",
        f"{spelled}://{bucket}/x/out.{format}",
    )
    assert result.returncode == 0, result.stderr
    assert get(f"{scheme}://{bucket}/x/out.{format}") == local.read_bytes()
    missing = read_cli(
        "export", "--store", store, "--output", f"{spelled}://no-{bucket}/out.ndjson"
    )
    assert missing.returncode == 2
    _one_error(missing.stderr, f"export --output {spelled}://no-{bucket}/out.ndjson: ")
    _one_error(missing.stderr, "does not exist")
