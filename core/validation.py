"""JSON Schema validation: the verdict from jsonschema-rs, a message for each no.

jsonschema-rs gives every verdict (~1 µs per command envelope) and decides
whether a schema is valid at all: it reads patterns as ECMA-262 regular
expressions, as JSON Schema requires (`"^\\p{Letter}+$"` is valid), where
python-jsonschema uses Python's `re`. python-jsonschema, the reference
implementation, still words the message of a rejected value when it can
(~60 µs, paid only by rejected lines); when it cannot evaluate the schema
(an ECMA-only pattern, a recursion too deep for Python) or finds nothing
wrong where jsonschema-rs does (`\\d` matches only ASCII digits in ECMA-262),
the message comes from jsonschema-rs. Verdicts and messages are tested to
agree (tests/unit/core/test_validation.py). Formats are annotations, not assertions.

A schema is compiled offline: a `$ref` to a resource the schema does not
hold itself is refused (`InvalidSchema`), never fetched, so a nightly run
never depends on the network or on what a URL serves that night.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema_rs

_MAX_MESSAGE = 300


class InvalidSchema(ValueError):
    """A schema document that is not itself valid JSON Schema."""


class SchemaValidator:
    def __init__(self, schema: dict[str, Any] | bool) -> None:
        try:
            self._fast: Any = jsonschema_rs.validator_for(
                schema, validate_formats=False, offline=True
            )
        except jsonschema_rs.ValidationError as e:
            raise InvalidSchema(_schema_error(e)) from e
        reference_cls = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        self._reference = reference_cls(schema)
        self._schema = schema

    def is_valid(self, instance: Any) -> bool:
        return bool(self._fast.is_valid(instance))

    def reference_is_valid(self, instance: Any) -> bool:
        """The reference engine's verdict (raises where it cannot evaluate the schema)."""
        return bool(self._reference.is_valid(instance))

    def explain(self, instance: Any, *, redact: bool = False, prefix: str = "") -> str:
        """Why `instance` fails: the reference engine's best message, else jsonschema-rs's.

        With `redact`, the message names the location and the rule only, never
        a value taken from the data.
        """
        try:
            error = jsonschema.exceptions.best_match(self._reference.iter_errors(instance))
        except Exception:  # noqa: BLE001 - a schema the reference engine cannot evaluate
            error = None
        if error is not None:
            path: list[Any] = list(error.absolute_path)
            rule, message = (error.validator, error.validator_value), error.message
        else:
            fast = next(iter(self._fast.iter_errors(instance)), None)
            if fast is None:
                return "fails the schema"
            path = list(fast.instance_path)
            rule = (fast.kind.name, _schema_value(self._schema, list(fast.schema_path)))
            message = fast.message
        where = "/".join(str(p) for p in path)
        location = f"{prefix}/{where}" if where else (prefix or "/")
        if redact:
            keyword, value = rule
            return f"{location}: does not satisfy {keyword}={_short(repr(value))}"
        return f"{location}: {_short(message)}"


_UNRESOLVED = re.compile(r"Resource '([^']*)' is not present in a registry")


def _schema_error(error: Any) -> str:
    """One line on why jsonschema-rs refused a schema."""
    unresolved = _UNRESOLVED.search(error.message)
    if unresolved:
        return (
            f"$ref {unresolved.group(1)} is not part of the schema, and a run never fetches "
            "schemas over the network: copy that schema into this one (under $defs, with its $id)"
        )
    where = "/".join(str(p) for p in error.instance_path)
    first_line = error.message.splitlines()[0] if error.message else "invalid"
    return f"not a valid JSON Schema: {where + ': ' if where else ''}{_short(first_line)}"


def _schema_value(schema: Any, path: list[str | int]) -> Any:
    """The value at `path` in the schema, or None where the path leaves it (through a $ref).

    Redacted messages take the rule's value from the schema, never from the
    error, whose values can come from the data (unexpected property names).
    """
    node = schema
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
