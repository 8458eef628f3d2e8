from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profile_import.core.fold import Command, ProfileFold, StoredProfile
from profile_import.core.merge import deep_merge, same_json, shallow_merge, upsert
from profile_import.core.nesting import deeper_than

pytestmark = pytest.mark.spec(section=2)

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


# --- properties: depth never grows, the in-place fold equals the pure one ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=12,
)
profiles = st.dictionaries(st.sampled_from("abcd"), json_values, max_size=4)
flags = st.tuples(st.booleans(), st.booleans())  # (force_replace, merge_objects)


def depth(value: Any) -> int:
    """SPEC §3's depth: a profile is level 1, each object or array inside adds one."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    ("profile", "want"), [({}, 1), ({"a": 1}, 1), ({"a": {"b": [1]}}, 3), ({"a": [[], {}]}, 3)]
)
def test_depth_as_the_spec_counts_it(profile: dict[str, Any], want: int) -> None:
    assert depth(profile) == want
    assert not deeper_than(profile, want) and deeper_than(profile, want - 1)


@settings(max_examples=300, deadline=None)
@given(profiles, profiles, flags)
def test_merging_never_nests_deeper_than_the_deeper_side(
    stored: dict[str, Any], update: dict[str, Any], flag: tuple[bool, bool]
) -> None:
    force_replace, merge_objects = flag
    merged = upsert(stored, update, force_replace=force_replace, merge_objects=merge_objects)
    assert depth(merged) <= max(depth(stored), depth(update))


@settings(max_examples=300, deadline=None)
@given(profiles, st.lists(st.tuples(profiles, flags), max_size=8))
def test_a_fold_that_merges_in_place_equals_the_pure_merges(
    stored: dict[str, Any], updates: list[tuple[dict[str, Any], tuple[bool, bool]]]
) -> None:
    commands = [Command("UPSERT", p, force, merge) for p, (force, merge) in updates]
    # The same command twice: a value the fold took in must never be grown in place.
    commands += commands[:2]
    before = copy.deepcopy((stored, commands))
    want: dict[str, Any] = stored
    for c in commands:
        assert c.profile is not None
        want = upsert(want, c.profile, force_replace=c.force_replace, merge_objects=c.merge_objects)
    fold = ProfileFold(StoredProfile(stored, "t0", "t0"))
    for c in commands:
        fold.apply(c)
    assert fold.current == want
    assert (stored, commands) == before  # the stored profile and the commands are untouched


def test_many_deep_merges_of_a_large_array_take_linear_time() -> None:
    """300 merges of a 10,000-item array: 3.4 s when each merge copied the
    array built so far, ~0.02 s growing it in place."""
    size, merges = 10_000, 300
    update = {"arr": list(range(size)), "o": {"arr": [1]}}
    fold = ProfileFold(StoredProfile({"arr": [-1]}, "t0", "t0"))
    started = time.perf_counter()
    for _ in range(merges):
        fold.apply(Command("UPSERT", update, False, True))
    elapsed = time.perf_counter() - started
    assert fold.current is not None and len(fold.current["arr"]) == 1 + size * merges
    assert fold.current["o"]["arr"] == [1] * merges
    assert elapsed < 1.0, f"{elapsed:.2f} s: quadratic again?"
