"""JSON Schema validation with a fast verdict and a reference explanation.

python-jsonschema is the reference implementation and gives the best messages,
but it costs ~60 µs per command envelope; jsonschema-rs gives the same verdict
in ~1 µs. Every line gets the fast verdict; only a rejected line pays for the
reference message. The two are tested to agree (tests/test_validation.py).
Formats are annotations, not assertions, in both (python-jsonschema's default).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema_rs

_MAX_MESSAGE = 300


class InvalidSchema(ValueError):
    """A schema document that is not itself valid JSON Schema."""


class SchemaValidator:
    def __init__(self, schema: dict[str, Any]) -> None:
        reference_cls = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
        try:
            reference_cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            raise InvalidSchema(f"not a valid JSON Schema: {e.message}") from e
        self._reference = reference_cls(schema)
        try:
            self._fast: Any = jsonschema_rs.validator_for(schema, validate_formats=False)
        except Exception:  # noqa: BLE001 - a schema the fast engine cannot compile
            self._fast = None  # falls back to the reference engine for the verdict too

    def check_usable(self) -> None:
        """Raises `InvalidSchema` for a schema that compiles but cannot work:
        an unresolvable `$ref`, or one the fast engine cannot compile."""
        if self._fast is None:
            raise InvalidSchema("the schema cannot be compiled (check its $ref and keywords)")
        probes: tuple[Any, ...] = ({}, [], "", 0, None)
        for probe in probes:
            try:
                self._reference.is_valid(probe)
            except Exception as e:
                raise InvalidSchema(f"the schema cannot be used: {e}") from e

    def is_valid(self, instance: Any) -> bool:
        if self._fast is not None:
            return bool(self._fast.is_valid(instance))
        return bool(self._reference.is_valid(instance))

    def reference_is_valid(self, instance: Any) -> bool:
        return bool(self._reference.is_valid(instance))

    def explain(self, instance: Any, *, redact: bool = False, prefix: str = "") -> str:
        """Why `instance` fails, from the reference engine.

        With `redact`, the message names the location and the rule only, never
        a value taken from the data.
        """
        error = jsonschema.exceptions.best_match(self._reference.iter_errors(instance))
        if error is None:
            return "fails the schema"
        where = "/".join(str(p) for p in error.absolute_path)
        location = f"{prefix}/{where}" if where else (prefix or "/")
        if redact:
            rule = f"{error.validator}={_short(repr(error.validator_value))}"
            return f"{location}: does not satisfy {rule}"
        return f"{location}: {_short(error.message)}"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
