"""`list`'s filters and projections (core.filters): typed, on dotted paths."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_import.core import records
from profile_import.core.filters import (
    Filter,
    FilterError,
    Query,
    json_equal,
    parse_properties,
    project,
    project_record,
)
from profile_import.core.fold import StoredProfile
from profile_import.core.identifiers import Identifier

PROFILE: dict[str, Any] = {
    "age": 30,
    "score": 0.5,
    "name": "Ann",
    "opt_in": True,
    "nothing": None,
    "tags": ["a", "b"],
    "nums": [1, 5],
    "address": {"city": "Paris", "zip": "75001", "geo": {"lat": 48.8}},
    "orders": [{"id": "o1"}],
}


def record_of(profile: dict[str, Any]) -> bytes:
    line = records.encode(Identifier.email_hash("h").key, StoredProfile(profile, "t", "t"))
    return records.split(line)[1]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        # eq: typed JSON equality, numbers as numbers
        ("age eq 30", True),
        ("age eq 30.0", True),
        ('age eq "30"', False),
        ("age eq 31", False),
        ('name eq "Ann"', True),
        ('name eq "ann"', False),
        ("opt_in eq true", True),
        ("opt_in eq 1", False),
        ("nothing eq null", True),
        ("nothing eq false", False),
        ('address eq {"zip":"75001","city":"Paris","geo":{"lat":48.8}}', True),
        ('address eq {"city":"Paris"}', False),
        ('address.city eq "Paris"', True),
        ("address.geo.lat eq 48.8", True),
        ('tags eq ["a","b"]', True),
        ('tags eq ["b","a"]', False),
        # a repeated property: one element is enough
        ('tags eq "a"', True),
        ('tags eq "c"', False),
        # neq is exactly "not eq"; a missing property matches it
        ("age neq 30", False),
        ('age neq "30"', True),
        ('tags neq "a"', False),
        ('tags neq "c"', True),
        ("missing neq 1", True),
        ("missing neq null", True),
        ("address.country neq 1", True),
        ("name.first neq 1", True),  # the path crosses a string: absent
        # ordering: numbers with numbers, strings with strings, nothing else
        ("age gt 29", True),
        ("age gt 30", False),
        ("age gte 30", True),
        ("age gte 30.5", False),
        ("age lt 30.5", True),
        ("age lte 30", True),
        ("age lt 30", False),
        ("score lt 1", True),
        ('age gt "1"', False),
        ('age lt "a"', False),
        ('name gt "Am"', True),
        ('name lt "B"', True),
        ('name gte "Ann"', True),
        ('name lt "Ann"', False),
        ("name gt 1", False),
        ("opt_in gt false", False),
        ("opt_in lte true", False),
        ("nothing lte null", False),
        ("address gt 1", False),
        ("nums gt 4", True),  # one element (5) is
        ("nums gt 5", False),
        ('tags gte "b"', True),
        ("missing lt 1", False),
        ("missing gte 1", False),
        # in / notin: eq against any of the list
        ('name in ["Bob","Ann"]', True),
        ('name in ["Bob"]', False),
        ("age in [1, 30.0]", True),
        ('age in ["30"]', False),
        ("age in []", False),
        ('tags in ["c","b"]', True),
        ("opt_in in [1]", False),
        ("nothing in [null]", True),
        ("missing in [null]", False),
        ('name notin ["Bob"]', True),
        ('name notin ["Ann"]', False),
        ("age notin []", True),
        ('tags notin ["b"]', False),
        ('missing notin ["x"]', True),
        ("missing eq null", False),
        ("missing in []", False),
    ],
)
def test_each_operator(where: str, expected: bool) -> None:
    query = Query.parse([where])
    assert query.filters[0].matches(PROFILE) is expected
    # The byte pre-check never changes a verdict.
    assert query.accepts(record_of(PROFILE)) is expected


def test_filters_are_anded() -> None:
    assert Query.parse(["age gte 18", 'address.city eq "Paris"']).accepts(record_of(PROFILE))
    assert not Query.parse(["age gte 18", 'address.city eq "Lyon"']).accepts(record_of(PROFILE))
    assert Query.parse([]).accepts(record_of(PROFILE))


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("age", "write PATH OP VALUE"),
        ("age gte", "write PATH OP VALUE"),
        ("age like 1", "unknown operator 'like'"),
        ("age eq x", "the value must be JSON"),
        ("age eq [1", "the value must be JSON"),
        ("age in 1", "in takes a JSON array"),
        ('age notin "x"', "notin takes a JSON array"),
        ("a..b eq 1", "names joined by dots"),
        (".a eq 1", "names joined by dots"),
    ],
)
def test_bad_filters_are_refused(where: str, problem: str) -> None:
    with pytest.raises(FilterError, match=problem):
        Filter.parse(where)


def test_a_value_may_hold_spaces() -> None:
    assert Filter.parse('city in ["New York", "Los Angeles"]').value == ["New York", "Los Angeles"]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (1, True, False),
        (0, False, False),
        (None, None, True),
        ("1", 1, False),
        ([1, [2]], [1.0, [2]], True),
        ([1], [1, 1], False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"b": 1}, False),
        ({"a": 1}, [1], False),
    ],
)
def test_json_equal_is_typed(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal and json_equal(b, a) is equal


def test_the_precheck_skips_records_without_parsing() -> None:
    query = Query.parse(['address.city eq "Oslo"'])
    # Not JSON at all: it would raise if parsed, so it was not.
    assert not query.accepts(b'{"no city here"')
    assert not Query.parse(["age gte 1"]).accepts(b"not json, no key")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, 2.0]) | st.text("ab"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("ab", max_size=2), inner),
    max_leaves=8,
)


@given(
    profile=st.dictionaries(st.sampled_from(["a", "b", "ab"]), JSON, max_size=3),
    op=st.sampled_from(["eq", "neq", "lt", "lte", "gt", "gte", "in", "notin"]),
    value=JSON,
    path=st.sampled_from(["a", "b", "a.b", "ab.a"]),
)
def test_the_precheck_agrees_with_the_full_check(
    profile: dict[str, Any], op: str, value: Any, path: str
) -> None:
    if op in ("in", "notin") and not isinstance(value, list):
        value = [value]
    f = Filter.parse(f"{path} {op} {orjson.dumps(value).decode()}")
    assert Query((f,)).accepts(record_of(profile)) is f.matches(profile)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ("age", {"age": 30}),
        ("age,name", {"age": 30, "name": "Ann"}),
        ("address.city", {"address": {"city": "Paris"}}),
        ("address.city,address.geo.lat", {"address": {"city": "Paris", "geo": {"lat": 48.8}}}),
        ("address,address.city", {"address": PROFILE["address"]}),
        ("address.city,address", {"address": PROFILE["address"]}),
        ("missing,name.first,address.nowhere", {}),
        ("nothing", {"nothing": None}),
    ],
)
def test_projection(properties: str, expected: dict[str, Any]) -> None:
    assert project(PROFILE, parse_properties(properties)) == expected


def test_a_projected_record_keeps_identifier_and_times() -> None:
    record = record_of(PROFILE)
    assert project_record(record, None) is record
    projected = orjson.loads(project_record(record, parse_properties("age")))
    assert projected == {
        "email_hash": "h",
        "user_profile": {"age": 30},
        "created_at": "t",
        "last_modified_at": "t",
    }
    assert list(projected) == ["email_hash", "user_profile", "created_at", "last_modified_at"]


@pytest.mark.parametrize("properties", ["", "a,", "a..b", ",a"])
def test_bad_property_lists(properties: str) -> None:
    with pytest.raises(FilterError):
        parse_properties(properties)


def test_digest_names_the_filters() -> None:
    assert Query.parse(["a eq 1"]).digest() == Query.parse(["a  eq  1"]).digest()
    assert Query.parse(["a eq 1"]).digest() != Query.parse(["a eq 2"]).digest()
