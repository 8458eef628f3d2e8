"""Filters and projections on stored profiles, for `profile-import list`.

A filter is `PATH OP VALUE`: `PATH` names a property of `user_profile`, with
dots into nested objects (`address.city`); `OP` is one of `eq`, `neq`, `lt`,
`lte`, `gt`, `gte`, `in`, `notin`; `VALUE` is JSON (`"FR"`, `18`, `true`,
`null`, `["FR","DE"]` for `in`/`notin`). Several filters are ANDed.

Comparisons are typed as JSON:
- `eq`: the same JSON value; numbers compare as numbers (`18` equals `18.0`),
  never equal to a string or a boolean; arrays and objects compare whole.
- `lt`, `lte`, `gt`, `gte`: numbers with numbers, strings with strings (code
  point order); any other pair (a string against a number, a boolean, null, an
  array or an object) never matches.
- `in`: equal (as `eq`) to one of the listed values.
- `neq` is exactly "not `eq`", `notin` exactly "not `in`".
- A property that is absent (or whose path crosses a non-object) matches
  `neq` and `notin` only.
- A stored array (a repeated property) compared with a value that is not an
  array matches when one of its elements does (`tags eq "a"` finds
  `["a","b"]`), as list properties are filtered in user-property APIs;
  `neq` / `notin` then mean that no element does.

`Query.accepts` takes a stored export record as bytes. It first looks for
bytes every match must contain (the last path segment as a JSON key, and for
`eq` / `in` on strings, booleans or null the value itself), so most records
that cannot match are skipped without parsing their JSON. This relies on
records being written by orjson (`records.encode`): compact, and each string
always escaped the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "notin")
_NEGATED = {"neq": "eq", "notin": "in"}
_ORDERING = ("lt", "lte", "gt", "gte")
_MISSING: Any = object()


class FilterError(ValueError):
    """A filter or a property list that cannot be understood."""


def parse_path(text: str, what: str) -> tuple[str, ...]:
    """A dotted property path into `user_profile`: `address.city`."""
    parts = tuple(text.split("."))
    if not text or any(not part for part in parts):
        raise FilterError(f"{what} {text!r}: a property path is names joined by dots")
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values, typed: `1` and `1.0` are equal, `1` and `true` not."""
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _ordered(op: str, stored: Any, value: Any) -> bool:
    if not (
        (_is_number(stored) and _is_number(value))
        or (isinstance(stored, str) and isinstance(value, str))
    ):
        return False
    if op == "lt":
        return bool(stored < value)
    if op == "lte":
        return bool(stored <= value)
    if op == "gt":
        return bool(stored > value)
    return bool(stored >= value)


def lookup(profile: Any, path: tuple[str, ...]) -> Any:
    """The value at `path`, or `_MISSING`."""
    value = profile
    for name in path:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(name, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


@dataclass(frozen=True)
class Filter:
    path: tuple[str, ...]
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Filter:
        """`PATH OP JSON`, e.g. `age gte 18`, `country in ["FR","DE"]`."""
        parts = text.strip().split(None, 2)
        if len(parts) < 3:
            raise FilterError(
                f"--where {text!r}: write PATH OP VALUE, e.g. 'age gte 18' or 'country eq \"FR\"'"
            )
        path_text, op, value_text = parts
        path = parse_path(path_text, "--where")
        if op not in OPERATORS:
            raise FilterError(f"--where {text!r}: unknown operator {op!r} ({', '.join(OPERATORS)})")
        try:
            value = orjson.loads(value_text)
        except orjson.JSONDecodeError:
            raise FilterError(
                f"--where {text!r}: the value must be JSON (quote strings: '{path_text} {op} "
                f'"{value_text}"\')'
            ) from None
        if op in ("in", "notin") and not isinstance(value, list):
            raise FilterError(f'--where {text!r}: {op} takes a JSON array, e.g. ["a","b"]')
        return cls(path, op, value)

    def matches(self, profile: Any) -> bool:
        """Whether a `user_profile` passes this filter."""
        positive = _NEGATED.get(self.op)
        if positive is not None:
            return not Filter(self.path, positive, self.value).matches(profile)
        stored = lookup(profile, self.path)
        if stored is _MISSING:
            return False
        if self._test(stored):
            return True
        # A repeated property: one element is enough (never for a whole-array value).
        return (
            isinstance(stored, list)
            and not (self.op == "eq" and isinstance(self.value, list))
            and any(self._test(item) for item in stored)
        )

    def _test(self, stored: Any) -> bool:
        if self.op == "eq":
            return json_equal(stored, self.value)
        if self.op == "in":
            return any(json_equal(stored, v) for v in self.value)
        return _ordered(self.op, stored, self.value)

    def needles(self) -> tuple[tuple[bytes, ...], ...]:
        """Byte strings a matching record must hold: each group needs one of its needles."""
        if self.op in _NEGATED:
            return ()
        groups: list[tuple[bytes, ...]] = [(orjson.dumps(self.path[-1]) + b":",)]
        values = [self.value] if self.op == "eq" else self.value if self.op == "in" else None
        if values is not None and all(isinstance(v, str | bool) or v is None for v in values):
            # An array value (eq [...]) never gets here; an empty `in` list matches nothing.
            groups.append(tuple(orjson.dumps(v) for v in values))
        return tuple(groups)


@dataclass(frozen=True)
class Query:
    """Filters ANDed, as given to `list`."""

    filters: tuple[Filter, ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[str]) -> Query:
        return cls(tuple(Filter.parse(t) for t in texts))

    def digest(self) -> str:
        """Names the filters, so a cursor is only used with the filters it was made for."""
        doc = [[list(f.path), f.op, f.value] for f in self.filters]
        return hashlib.sha256(orjson.dumps(doc)).hexdigest()[:16]

    def accepts(self, record: bytes) -> bool:
        """Whether an export record passes every filter (parsed only when it may)."""
        return self.predicate()(record)

    def predicate(self) -> Callable[[bytes], bool]:
        """`accepts` with its needles computed once, for a scan."""
        if not self.filters:
            return lambda record: True
        groups = [group for f in self.filters for group in f.needles()]
        singles = [group[0] for group in groups if len(group) == 1]
        several = [group for group in groups if len(group) > 1 or not group]
        filters = self.filters
        loads = orjson.loads

        def accepts(record: bytes) -> bool:
            for needle in singles:
                if needle not in record:
                    return False
            for group in several:
                if not any(needle in record for needle in group):
                    return False
            profile = loads(record)["user_profile"]
            return all(f.matches(profile) for f in filters)

        return accepts


def parse_properties(text: str) -> tuple[tuple[str, ...], ...]:
    """`--properties a,b.c`: the paths to keep."""
    paths = tuple(parse_path(part.strip(), "--properties") for part in text.split(","))
    return paths


def project(profile: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """Only the properties at `paths` (nested ones inside their objects); absent ones left out."""
    out: dict[str, Any] = {}
    for path in paths:
        value = lookup(profile, path)
        if value is _MISSING:
            continue
        target = out
        for name in path[:-1]:
            inner = target.get(name)
            if not isinstance(inner, dict):
                inner = target[name] = {}
            target = inner
        if path[-1] in target and isinstance(target[path[-1]], dict) and isinstance(value, dict):
            target[path[-1]] = {**target[path[-1]], **value}
        else:
            target[path[-1]] = value
    return out


def project_record(record: bytes, paths: Sequence[tuple[str, ...]] | None) -> bytes:
    """An export record with only the properties at `paths` (None: all of them)."""
    if paths is None:
        return record
    obj = orjson.loads(record)
    obj["user_profile"] = project(obj["user_profile"], paths)
    return orjson.dumps(obj)
