"""Depth (SPEC §3) and reading lines nested deeper than orjson reads."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from profile_import.core.nesting import NotJson, deeper_than, flatten

pytestmark = pytest.mark.spec(section=3)


def nested(levels: int, kind: str = "[") -> bytes:
    """A JSON value of exactly `levels` levels: arrays, or objects `{"a": ...}`."""
    if kind == "[":
        return b"[" * levels + b"1" + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize("levels", [1, 2, 100, 101, 102, 500])
def test_deeper_than(levels: int, kind: str) -> None:
    value = orjson.loads(nested(levels, kind))
    assert not deeper_than(value, levels)
    assert deeper_than(value, levels - 1)


@pytest.mark.parametrize("value", [1, "x", None, True])
def test_a_scalar_has_no_depth(value: Any) -> None:
    assert not deeper_than(value, 0)


@pytest.mark.parametrize("kind", ["[", "{"])
@pytest.mark.parametrize("levels", [1, 102, 103, 104, 1024, 1025, 5000])
def test_flatten_keeps_102_levels_and_marks_the_cut(levels: int, kind: str) -> None:
    line = b'{"user_profile":' + nested(levels, kind) + b',"x":"[[{"}'
    flat = orjson.loads(flatten(line))
    assert flat["x"] == "[[{"  # brackets in strings do not nest
    if levels <= 101:
        assert flat == orjson.loads(line)
    else:
        # Cut, and still deeper than a profile may be (102 levels with the `[]`).
        assert deeper_than(flat["user_profile"], 101)
        assert not deeper_than(flat["user_profile"], 102)


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 2000 + b"]" * 1999,  # unbalanced
        b"[" * 2000 + b"}" + b"]" * 1999,  # mismatched
        b"[" * 2000 + b"1,]" + b"]" * 1999,  # an error deep inside
        b"[" * 2000 + b"]" * 2000 + b"]",
        b'{"a":"' + b"[" * 2000 + b"]" * 2000,  # a string that never ends
        b"[" * 150 + b"[1 2]" + b"]" * 150 + b" x",  # errors at several levels
        b"[" * 150 + b"[1]" + b"]" * 150 + b"[",
        b"[" * 1100 + b"\xff" + b"]" * 1100,  # not UTF-8, deep inside
    ],
)
def test_flatten_finds_json_errors_at_any_depth(line: bytes) -> None:
    with pytest.raises(NotJson):
        flatten(line)


def test_flatten_agrees_with_a_reference_parser_on_valid_lines() -> None:
    # json.loads reads ~990 levels; compare where both can read.
    for levels in (103, 300, 900):
        line = b'{"a":[1,{"b":' + nested(levels, "{") + b'},"c",' + nested(levels) + b"]}"
        json.loads(line)
        assert orjson.loads(flatten(line))["a"][0] == 1
