from __future__ import annotations

import copy
from typing import Any

import pytest

from profile_import.core.merge import deep_merge, same_json, shallow_merge, upsert

STORED = {
    "p1": "v1",
    "p2": "v1",
    "arr": ["v1"],
    "objs": [{"a": "v1", "b": "v1"}],
    "obj": {"a": "v1", "b": "v1"},
}
UPDATE = {
    "p2": "v2",
    "p3": "v3",
    "arr": ["v2"],
    "objs": [{"b": "v2", "c": "v3"}],
    "obj": {"b": "v2", "c": "v3"},
}


def test_deep_merge_is_the_spec_worked_example() -> None:
    assert deep_merge(STORED, UPDATE) == {
        "p1": "v1",
        "p2": "v2",
        "p3": "v3",
        "arr": ["v1", "v2"],
        "objs": [{"a": "v1", "b": "v1"}, {"b": "v2", "c": "v3"}],
        "obj": {"a": "v1", "b": "v2", "c": "v3"},
    }


def test_shallow_merge_replaces_top_level_values_wholesale() -> None:
    assert shallow_merge(STORED, UPDATE) == {
        "p1": "v1",
        "p2": "v2",
        "arr": ["v2"],
        "objs": [{"b": "v2", "c": "v3"}],
        "obj": {"b": "v2", "c": "v3"},
        "p3": "v3",
    }


@pytest.mark.parametrize(
    ("stored", "update", "force_replace", "merge_objects", "expected"),
    [
        (None, {"a": 1}, False, False, {"a": 1}),
        (None, {"a": 1}, False, True, {"a": 1}),
        (None, {"a": 1}, True, True, {"a": 1}),
        ({"a": 1, "b": 2}, {"c": 3}, True, False, {"c": 3}),
        ({"a": 1, "b": 2}, {"c": 3}, True, True, {"c": 3}),
        ({"a": 1, "b": 2}, {"b": 3}, False, False, {"a": 1, "b": 3}),
        ({"o": {"x": 1}}, {"o": {"y": 2}}, False, False, {"o": {"y": 2}}),
        ({"o": {"x": 1}}, {"o": {"y": 2}}, False, True, {"o": {"x": 1, "y": 2}}),
        (
            {"o": {"i": {"x": 1}}},
            {"o": {"i": {"y": 2}}},
            False,
            True,
            {"o": {"i": {"x": 1, "y": 2}}},
        ),
        ({"l": [1, 1]}, {"l": [1]}, False, True, {"l": [1, 1, 1]}),
        ({"l": [1]}, {"l": {"k": 1}}, False, True, {"l": {"k": 1}}),
        ({"o": {"k": 1}}, {"o": [1]}, False, True, {"o": [1]}),
        ({"a": 1}, {"a": None}, False, True, {"a": None}),
        ({"a": {"x": 1}}, {"a": None}, False, False, {"a": None}),
        ({"a": None}, {"a": {"x": 1}}, False, True, {"a": {"x": 1}}),
        ({"a": 1}, {}, False, True, {"a": 1}),
        ({}, {}, True, False, {}),
    ],
)
def test_upsert_modes(
    stored: dict[str, Any] | None,
    update: dict[str, Any],
    force_replace: bool,
    merge_objects: bool,
    expected: dict[str, Any],
) -> None:
    assert (
        upsert(stored, update, force_replace=force_replace, merge_objects=merge_objects) == expected
    )


@pytest.mark.parametrize("merge_objects", [False, True])
def test_merges_never_mutate_their_inputs(merge_objects: bool) -> None:
    stored, update = copy.deepcopy(STORED), copy.deepcopy(UPDATE)
    result = upsert(stored, update, force_replace=False, merge_objects=merge_objects)
    assert stored == STORED and update == UPDATE
    assert result is not stored


def test_shallow_merge_keeps_the_stored_key_order_then_appends() -> None:
    assert list(shallow_merge({"b": 1, "a": 2}, {"c": 3, "b": 4})) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": 1}, {"a": 1.0}, False),
        ([0], [False], False),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": {}}, {"a": []}, False),
        ("x", "x", True),
    ],
)
def test_same_json_is_strict_about_types(a: Any, b: Any, same: bool) -> None:
    assert same_json(a, b) is same
    assert same_json(b, a) is same
