"""Profile schemas: every valid Draft 2020-12 schema, verdicts and messages that agree, offline."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_import.core.validation import InvalidSchema, SchemaValidator

from ...helpers import message_lines, read_ndjson, run_cli, write_lines

pytestmark = pytest.mark.spec(section=3)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# From the official JSON-Schema-Test-Suite (optional/ecmascript-regex.json): valid
# Draft 2020-12, but not a Python regular expression.
LETTERS = {"$schema": DRAFT, "type": "string", "pattern": "^\\p{Letter}+$"}
PROFILE: dict[str, Any] = {
    "$schema": DRAFT,
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^\\p{Letter}+$"},
        "code": {"type": "string", "pattern": "^\\d{3}$"},  # ASCII digits only in ECMA-262
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 3},
        "kind": {"enum": ["a", "b"]},
        "nested": {"$ref": "#/$defs/tree"},
    },
    "required": ["age"],
    "additionalProperties": False,
    "$defs": {
        "tag": {"type": "string", "minLength": 1},
        "tree": {"type": "object", "additionalProperties": {"$ref": "#/$defs/tree"}},
    },
}


@pytest.mark.parametrize(
    ("instance", "valid"),
    [("Letters", True), ("ÅngströmΩ", True), ("ℵ", True), ("abc1", False), ("", False)],
)
def test_an_ecma_262_pattern_is_a_valid_schema(instance: str, valid: bool) -> None:
    assert SchemaValidator(LETTERS).is_valid(instance) is valid


@pytest.mark.parametrize("redact", [False, True])
def test_a_value_that_fails_an_ecma_pattern_has_a_clear_message(redact: bool) -> None:
    validator = SchemaValidator(PROFILE)
    message = validator.explain({"age": 3, "name": "R2D2"}, redact=redact, prefix="user_profile")
    if redact:
        assert message == "user_profile/name: does not satisfy pattern='^\\\\p{Letter}+$'"
    else:
        assert message == 'user_profile/name: "R2D2" does not match "^\\p{Letter}+$"'


def test_ecma_digits_are_ascii_digits() -> None:
    # Python's \d takes any Unicode digit; the verdict and the message follow ECMA-262.
    validator = SchemaValidator(PROFILE)
    assert validator.is_valid({"age": 1, "code": "123"})
    assert not validator.is_valid({"age": 1, "code": "١٢٣"})
    assert validator.explain({"age": 1, "code": "١٢٣"}).startswith("/code: ")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integr"}, "not a valid JSON Schema: type: "),
        ({"pattern": "(("}, "not a valid JSON Schema: pattern: "),
        ({"pattern": "\\Z"}, "not a valid JSON Schema: pattern: "),  # Python only, not ECMA-262
        ({"minimum": "0"}, "not a valid JSON Schema: minimum: "),
        ({"$ref": "#/$defs/missing"}, "not a valid JSON Schema: "),
        ({"$schema": "https://example.com/my-meta-schema"}, "not a valid JSON Schema: "),
    ],
)
def test_invalid_schemas_are_refused_in_one_line(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSchema) as caught:
        SchemaValidator(schema)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012 - shared by the server's handler instances

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = json.dumps({"type": "integer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[str]:
    """A server that would serve a schema, and records whether anyone asked."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "make",
    [
        lambda url: {"$ref": f"{url}/age.json"},
        lambda url: {"properties": {"age": {"$ref": f"{url}/age.json#/x"}}},
        lambda url: {"$id": f"{url}/root.json", "$ref": "age.json"},  # relative to the $id
    ],
)
def test_a_remote_ref_is_refused_and_never_fetched(schema_server: str, make: Any) -> None:
    with pytest.raises(InvalidSchema) as caught:
        SchemaValidator(make(schema_server))
    assert f"$ref {schema_server}/" in str(caught.value)
    assert "never fetches schemas over the network" in str(caught.value)
    assert _Recorder.requests == []


def test_a_ref_to_a_resource_the_schema_holds_needs_no_network() -> None:
    schema = {
        "$id": "https://example.com/root.json",
        "$ref": "age.json",
        "$defs": {"age": {"$id": "age.json", "type": "integer"}},
    }
    validator = SchemaValidator(schema)
    assert validator.is_valid(3) and not validator.is_valid("3")


def test_a_deep_value_under_a_recursive_schema_is_explained() -> None:
    # Deeper than python-jsonschema can descend: the message comes from jsonschema-rs.
    value: Any = 1
    for _ in range(99):
        value = {"n": value}
    validator = SchemaValidator(PROFILE)
    assert not validator.is_valid({"age": 1, "nested": value})
    message = validator.explain({"age": 1, "nested": value})
    assert message.startswith("/nested/" + "n/" * 98 + "n: ")


# --- the verdict and the message agree ---------------------------------------

texts = st.sampled_from(["", "a", "Zoë", "R2D2", "123", "١٢٣", "ℵ", "x y"])
values = st.one_of(st.none(), st.booleans(), st.integers(-2, 200), texts)
instances: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(["name", "code", "age", "tags", "kind", "nested", "other"]),
    st.one_of(
        values,
        st.lists(values, max_size=4),
        st.dictionaries(st.sampled_from("xy"), st.one_of(values, st.just({})), max_size=2),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances, st.booleans())
def test_every_rejected_value_gets_a_message_at_a_place_that_fails(
    instance: dict[str, Any], redact: bool
) -> None:
    validator = SchemaValidator(PROFILE)
    fast = jsonschema_rs.validator_for(PROFILE, offline=True)
    failing = {"/" + "/".join(str(p) for p in e.instance_path) for e in fast.iter_errors(instance)}
    assert validator.is_valid(instance) is not bool(failing)
    if not failing:
        return
    message = validator.explain(instance, redact=redact)
    location, _, why = message.partition(": ")
    assert why and why != "fails the schema"
    # Where the message points, the fast engine finds a fault too (or inside it).
    assert any(place == location or place.startswith(location + "/") for place in failing) or (
        location == "/" and "/" in failing
    ), (message, failing)


def test_the_cli_accepts_an_ecma_schema_and_words_its_rejects(tmp_path: Path) -> None:
    schema = tmp_path / "profile.schema.json"
    schema.write_text(json.dumps(PROFILE), encoding="utf-8")
    good = {"operation": "UPSERT", "email_hash": "h", "force_replace": True}
    inputs = write_lines(
        tmp_path / "in.ndjson",
        [
            {**good, "user_profile": {"age": 30, "name": "Zoë"}},
            {**good, "email_hash": "g", "user_profile": {"age": 30, "name": "R2D2"}},
        ],
    )
    rejects = tmp_path / "rejects.ndjson"
    args: list[str | Path] = ["run", inputs, "--store", tmp_path / "store"]
    args += ["--profile-schema", schema]
    result = run_cli(*args, "--rejects", rejects, "--quiet")
    assert result.returncode == 0, result.stderr
    [reject] = read_ndjson(rejects)
    assert reject["line"] == 2 and reject["code"] == "PROFILE_SCHEMA_VIOLATION"
    assert reject["message"] == 'user_profile/name: "R2D2" does not match "^\\p{Letter}+$"'


def test_the_cli_refuses_a_remote_ref_in_one_line(tmp_path: Path, schema_server: str) -> None:
    schema = tmp_path / "remote.schema.json"
    schema.write_text(json.dumps({"$ref": f"{schema_server}/profile.json"}), encoding="utf-8")
    inputs = write_lines(tmp_path / "in.ndjson", [{"operation": "DELETE", "email_hash": "h"}])
    result = run_cli("run", inputs, "--store", tmp_path / "store", "--profile-schema", schema)
    assert result.returncode == 2
    [line] = message_lines(result.stderr)
    assert f"--profile-schema {schema}: $ref {schema_server}/profile.json is not part" in line
    assert _Recorder.requests == []
    assert not (tmp_path / "store").exists()
