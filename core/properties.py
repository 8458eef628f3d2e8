"""Typed property declarations (`run --properties-file`).

A declarations file is a JSON array; each declaration names one top-level
property of `user_profile` and its type, in the style of user-property APIs:

    [{"property_name": "age", "value_type": "uint8", "repeated": false},
     {"property_name": "tags", "value_type": "unicode32", "repeated": true}]

| value_type | a value fits when it is |
|---|---|
| `int8` `int16` `int32` `int64` | an integer in -2^(N-1) .. 2^(N-1)-1 |
| `uint8` `uint16` `uint32` `uint64` | an integer in 0 .. 2^N-1 |
| `float16` `float32` | a number within the type's largest finite value (±65504, ±3.4e38) |
| `float64` | any number (JSON has no infinities or NaN) |
| `bool` | true or false |
| `unicode` | a string |
| `unicodeN` | a string of at most N characters (code points), N >= 1 |

Float ranges bound the magnitude only, not the precision (0.1 fits float16).
Integers are as JSON Schema counts them: `18.0` fits `int8`. `repeated: true`
(default false) declares an array whose every element fits the type. `null`
fits no type. A declared property may be absent. A name is a top-level
property (1 to 64 letters, digits, `_` or `-`; no dotted paths): objects
cannot be declared, only their parent can be allowed as undeclared.
Undeclared properties reject the line unless the run allows them
(`--allow-undeclared-properties`).

The declarations compile to one JSON Schema checked with jsonschema-rs, so
a line costs about what the envelope check costs; only a rejected line is
walked again, to name the property and its declared type.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .validation import SchemaValidator

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNICODE_N = re.compile(r"unicode([1-9][0-9]{0,8})")
_FIELDS = frozenset(("property_name", "value_type", "repeated"))
_FLOAT_MAX = {"float16": 65504.0, "float32": 3.4028234663852886e38}
_SHOWN = 60


def _scalar_types() -> dict[str, tuple[dict[str, Any], str]]:
    types: dict[str, tuple[dict[str, Any], str]] = {}
    for bits in (8, 16, 32, 64):
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        types[f"int{bits}"] = (
            {"type": "integer", "minimum": low, "maximum": high},
            f"int{bits} ({low}..{high})",
        )
        types[f"uint{bits}"] = (
            {"type": "integer", "minimum": 0, "maximum": 2**bits - 1},
            f"uint{bits} (0..{2**bits - 1})",
        )
    for name, limit in _FLOAT_MAX.items():
        types[name] = (
            {"type": "number", "minimum": -limit, "maximum": limit},
            f"{name} (a number within ±{limit:g})",
        )
    types["float64"] = ({"type": "number"}, "float64 (a number)")
    types["bool"] = ({"type": "boolean"}, "bool (true or false)")
    types["unicode"] = ({"type": "string"}, "unicode (a string)")
    return types


SCALAR_TYPES = _scalar_types()
TYPE_NAMES = "int8..int64, uint8..uint64, float16, float32, float64, bool, unicode, unicodeN"


class DeclarationError(ValueError):
    """A declarations document that cannot be used; the message is one line."""


def type_schema(value_type: str) -> tuple[dict[str, Any], str]:
    """The JSON Schema of one value of `value_type`, and how messages name it."""
    known = SCALAR_TYPES.get(value_type)
    if known is not None:
        return known
    sized = _UNICODE_N.fullmatch(value_type)
    if sized is None:
        raise DeclarationError(f"unknown value_type {value_type!r} ({TYPE_NAMES})")
    length = int(sized.group(1))
    return {"type": "string", "maxLength": length}, f"{value_type} (a string of at most {length})"


@dataclass(frozen=True)
class Declaration:
    name: str
    value_type: str
    repeated: bool = False

    def schema(self) -> dict[str, Any]:
        item, _ = type_schema(self.value_type)
        return {"type": "array", "items": item} if self.repeated else item

    @property
    def described(self) -> str:
        _, text = type_schema(self.value_type)
        return text


@dataclass(frozen=True)
class Declarations:
    properties: tuple[Declaration, ...]
    allow_undeclared: bool = False

    @classmethod
    def parse(cls, doc: Any, *, allow_undeclared: bool = False) -> Declarations:
        """Checks a parsed declarations document; `DeclarationError` names the first fault."""
        if not isinstance(doc, list):
            raise DeclarationError("a declarations file is a JSON array of declarations")
        seen: dict[str, int] = {}
        properties = []
        for number, item in enumerate(doc, start=1):
            where = f"declaration {number}"
            if not isinstance(item, dict):
                raise DeclarationError(f"{where}: a declaration is a JSON object")
            unknown = sorted(set(item) - _FIELDS)
            if unknown:
                raise DeclarationError(f"{where}: unknown field {unknown[0]!r}")
            name, value_type = item.get("property_name"), item.get("value_type")
            repeated = item.get("repeated", False)
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise DeclarationError(
                    f"{where}: property_name {name!r} is not a top-level property name "
                    "(1 to 64 letters, digits, _ or -)"
                )
            if name in seen:
                raise DeclarationError(
                    f"{where}: property {name!r} is declared twice (also declaration {seen[name]})"
                )
            if not isinstance(value_type, str):
                raise DeclarationError(f"{where}: value_type must be a string ({TYPE_NAMES})")
            try:
                type_schema(value_type)
            except DeclarationError as e:
                raise DeclarationError(f"{where}: {e}") from e
            if not isinstance(repeated, bool):
                raise DeclarationError(f"{where}: repeated must be true or false")
            seen[name] = number
            properties.append(Declaration(name, value_type, repeated))
        return cls(tuple(properties), allow_undeclared)

    @classmethod
    def from_json(cls, data: bytes, *, allow_undeclared: bool = False) -> Declarations:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise DeclarationError(f"not valid JSON: {e}") from None
        return cls.parse(doc, allow_undeclared=allow_undeclared)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema a `user_profile` must satisfy."""
        return {
            "type": "object",
            "properties": {d.name: d.schema() for d in self.properties},
            "additionalProperties": self.allow_undeclared,
        }

    def fingerprint(self) -> str:
        """What the declarations mean (order and spelling of the file do not count)."""
        doc = {
            "properties": sorted([d.name, d.value_type, d.repeated] for d in self.properties),
            "allow_undeclared": self.allow_undeclared,
        }
        return hashlib.sha256(orjson.dumps(doc)).hexdigest()

    def checker(self) -> DeclarationsChecker:
        return DeclarationsChecker(self)


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class DeclarationsChecker:
    """The verdict of the declarations on profiles. Build once per worker."""

    def __init__(self, declarations: Declarations) -> None:
        self._allow_undeclared = declarations.allow_undeclared
        self._whole = SchemaValidator(declarations.schema())
        self._declared = {d.name: d for d in declarations.properties}
        self._items = {
            d.value_type: SchemaValidator(type_schema(d.value_type)[0])
            for d in declarations.properties
        }

    def violation(self, profile: dict[str, Any], *, redact: bool = False) -> str | None:
        """None when `profile` fits; else one line naming the first property that does not."""
        if self._whole.is_valid(profile):
            return None
        for name, value in profile.items():
            declared = self._declared.get(name)
            if declared is None:
                if self._allow_undeclared:
                    continue
                return (
                    f"user_profile/{name[:64]}: not declared in --properties-file "
                    "(or pass --allow-undeclared-properties)"
                )
            problem = self._value_problem(declared, f"user_profile/{name}", value, redact)
            if problem is not None:
                return problem
        return "user_profile does not fit the declared properties"

    def _value_problem(
        self, declared: Declaration, where: str, value: Any, redact: bool
    ) -> str | None:
        fits = self._items[declared.value_type].is_valid
        if not declared.repeated:
            return None if fits(value) else self._misfit(where, value, declared.described, redact)
        if not isinstance(value, list):
            described = f"repeated {declared.value_type} (an array)"
            return self._misfit(where, value, described, redact)
        for index, item in enumerate(value):
            if not fits(item):
                return self._misfit(f"{where}/{index}", item, declared.described, redact)
        return None

    @staticmethod
    def _misfit(where: str, value: Any, described: str, redact: bool) -> str:
        shown = "the value" if redact else _shown(value)
        return f"{where}: {shown} does not fit {described}"
