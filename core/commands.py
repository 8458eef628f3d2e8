"""Checking one raw line into a command, or a reject with its code (SPEC §1, §3).

`CommandChecker.check` is the whole verdict on a line, in the precedence of
SPEC §3. The command envelope schema (`schemas/command.schema.json`) gives the
verdict for every line; when it says no, `classify` finds the first fault in
table order and says it in plain words. The identifier rules (exactly one form,
the default compartment) depend on the run's options, so `identifiers.resolve`
checks them after the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from profile_import import schemas

from .codes import LineRejected, RejectCode
from .fold import DELETE, DELETE_COMMAND, DELETES, STAND_IN, UPSERT, Command, kind_of, moot
from .identifiers import IDENTIFIER_FIELDS, json_type, resolve
from .nesting import (
    MAX_LINE_DEPTH,
    MAX_PROFILE_DEPTH,
    NotJson,
    deeper_than,
    flatten,
    is_depth_error,
)
from .properties import Declarations
from .validation import SchemaValidator

DEFAULT_MAX_LINE_BYTES = 1 << 20

OPERATIONS = (UPSERT, DELETE)
FORCE_REPLACE = "force_replace"
MERGE_OBJECTS = "merge_objects"
USER_PROFILE = "user_profile"
KNOWN_FIELDS = frozenset(
    ("operation", *IDENTIFIER_FIELDS, FORCE_REPLACE, MERGE_OBJECTS, USER_PROFILE)
)

# orjson reads an integer beyond 64 bits as a float without a word: 2**70
# would be stored as 1.1805916207174113e+21. A line with a run of 19 or more
# digits is read again by the standard library, which keeps integers exact:
# identifiers are then normalised exactly, and a profile that holds such an
# integer is rejected, since the store (written with orjson) cannot keep it.
# Found by mapping digits to "0" and all else to "." (C speed, ~0.3 µs a line;
# a regular expression took 3 µs).
#
# The same mapping sends "[" and "{" to "(": a line with at most 101 of them
# cannot nest deeper than the 101 levels a good line may have (SPEC §3), so
# only a line with more pays for measuring its depth (`nesting.deeper_than`).
# Counting costs ~0.3 µs a line (measured on the benchmark's lines: the whole
# check went from 4.2 to 4.55 µs); walking every parsed line instead would
# cost ~5 µs more.
_SCAN = bytes(
    0x30 if 0x30 <= byte <= 0x39 else 0x28 if byte in b"[{" else 0x2E for byte in range(256)
)
_LONG_DIGIT_RUN = b"0" * 19
_OPENER = b"("
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

_FIELD_TYPES: tuple[tuple[str, str, type], ...] = (
    (FORCE_REPLACE, "a boolean", bool),
    (MERGE_OBJECTS, "a boolean", bool),
    (USER_PROFILE, "an object", dict),
)


class Accepted(NamedTuple):
    key: bytes  # the identifier's canonical key
    operation: str
    obj: dict[str, Any]  # the parsed line, for a caller that applies it at once
    kind: int  # `fold.kind_of`, for a caller that keeps the line raw


def huge_integer_path(value: Any, path: str) -> str | None:
    """Where `value` holds an integer outside the 64-bit range, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not _INT_MIN <= value <= _INT_MAX else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for name, item in items:
        found = huge_integer_path(item, f"{path}/{name}")
        if found is not None:
            return found
    return None


# `\\u0000` is the only way JSON spells U+0000 (a raw NUL byte is not valid
# JSON), so a line without these six bytes cannot hold it: the exact check
# (`nul_path`) runs only for lines that have them (a literal backslash
# followed by "u0000" has them too, and passes the exact check).
_NUL_ESCAPE = b"\\u0000"
_NUL = "\x00"


def nul_path(value: Any, path: str) -> str | None:
    """Where `value` holds U+0000, in a string or a property name, or None.

    The path names the object whose property name holds it (`path` itself
    when it is the name's object), never the name.
    """
    if isinstance(value, str):
        return path if _NUL in value else None
    if isinstance(value, dict):
        for name, item in value.items():
            if _NUL in name:
                return path
            found = nul_path(item, f"{path}/{name}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}/{index}")
            if found is not None:
                return found
    return None


def nul_identifier(obj: dict[str, Any]) -> str | None:
    """The identifier field of a command object whose string holds U+0000, or None."""
    for name in IDENTIFIER_FIELDS:
        value = obj.get(name)
        if isinstance(value, str) and _NUL in value:
            return name
    return None


def _nul_in_identifier(name: str) -> LineRejected:
    return LineRejected(
        RejectCode.INVALID_IDENTIFIER,
        f"{name} holds the character U+0000 (NUL), which this store cannot hold",
    )


def _nul_in_profile(path: str) -> LineRejected:
    return LineRejected(
        RejectCode.INVALID_FIELD,
        f"{path}: a string or property name holds the character U+0000 (NUL), "
        "which this store cannot hold",
    )


def _too_deep() -> LineRejected:
    return LineRejected(
        RejectCode.INVALID_FIELD,
        f"user_profile is nested more than {MAX_PROFILE_DEPTH} levels deep",
    )


def _huge_integer(path: str) -> LineRejected:
    return LineRejected(
        RejectCode.INVALID_FIELD,
        f"{path}: an integer outside the 64-bit range, which cannot be stored exactly",
    )


def classify(
    obj: dict[str, Any],
    default_compartment_id: str | None,
    huge_integer_at: str | None = None,
    profile_too_deep: bool = False,
    nul_at: str | None = None,
    nul_identifier_field: str | None = None,
) -> LineRejected | None:
    """The first fault of a command object in SPEC §3's order, or None.

    Covers every rule from INVALID_OPERATION to UNKNOWN_FIELD; the messages name
    fields and JSON types, never values, so they are safe to keep when
    rejects are redacted.
    """
    operation = obj.get("operation")
    if "operation" not in obj:
        return LineRejected(RejectCode.INVALID_OPERATION, "operation is missing")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        return LineRejected(
            RejectCode.INVALID_OPERATION,
            f'operation must be "UPSERT" or "DELETE" (got a {json_type(operation)} that is not)',
        )
    try:
        resolve(obj, default_compartment_id)
    except LineRejected as rejected:
        return rejected
    if nul_identifier_field is not None:
        return _nul_in_identifier(nul_identifier_field)
    if operation == UPSERT:
        if FORCE_REPLACE not in obj:
            return LineRejected(RejectCode.MISSING_FORCE_REPLACE, "an UPSERT needs force_replace")
        if USER_PROFILE not in obj:
            return LineRejected(RejectCode.MISSING_USER_PROFILE, "an UPSERT needs user_profile")
    for name, wanted, python_type in _FIELD_TYPES:
        if name in obj and not isinstance(obj[name], python_type):
            return LineRejected(
                RejectCode.INVALID_FIELD, f"{name} must be {wanted}, not {json_type(obj[name])}"
            )
    if profile_too_deep:
        return _too_deep()
    if huge_integer_at is not None:
        return _huge_integer(huge_integer_at)
    if nul_at is not None:
        return _nul_in_profile(nul_at)
    unknown = sorted(name for name in obj if name not in KNOWN_FIELDS)
    if unknown:
        listed = ", ".join(repr(name[:40]) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return LineRejected(RejectCode.UNKNOWN_FIELD, f"unknown field {listed}{more}")
    return None


@dataclass(frozen=True)
class CheckSettings:
    """Everything a line check depends on; small and picklable, for workers."""

    default_compartment_id: str | None = None
    profile_schema: dict[str, Any] | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    redact: bool = False
    envelope_schema: dict[str, Any] = field(default_factory=schemas.load)
    # Typed property declarations (--properties-file), checked before profile_schema.
    declarations: Declarations | None = None
    # False for a store that cannot hold U+0000 in text (PostgreSQL's text and
    # jsonb): a line that would put it there is rejected, never fails the run.
    holds_nul: bool = True

    def build(self) -> CommandChecker:
        return CommandChecker(self)


class CommandChecker:
    """The verdict on raw lines. Build once per worker (it compiles schemas)."""

    def __init__(self, settings: CheckSettings) -> None:
        self.settings = settings
        self._default_compartment_id = settings.default_compartment_id
        self._max_line_bytes = settings.max_line_bytes
        self._refuse_nul = not settings.holds_nul
        self._envelope = SchemaValidator(settings.envelope_schema)
        self._profile = (
            SchemaValidator(settings.profile_schema)
            if settings.profile_schema is not None
            else None
        )
        self._declared = (
            settings.declarations.checker() if settings.declarations is not None else None
        )

    def check(self, content: bytes, size: int | None = None) -> Accepted | None:
        """The accepted command of a line, None for a blank line, or `LineRejected`.

        `content` is the line without its terminator; `size` is its full length
        when the reader cut it short.
        """
        size = len(content) if size is None else size
        if size > self._max_line_bytes:
            raise LineRejected(
                RejectCode.LINE_TOO_LARGE,
                f"line is {size} bytes, over the limit of {self._max_line_bytes}",
            )
        if not content.strip():
            return None
        parsed = content
        try:
            obj = orjson.loads(content)
        except orjson.JSONDecodeError as e:
            if not is_depth_error(e):
                raise LineRejected(RejectCode.INVALID_JSON, f"not valid JSON: {e}") from None
            # Valid JSON may nest deeper than orjson reads: read it in parts.
            try:
                parsed = flatten(content)
            except NotJson as not_json:
                raise LineRejected(RejectCode.INVALID_JSON, f"not valid JSON: {not_json}") from None
            obj = orjson.loads(parsed)
        if not isinstance(obj, dict):
            raise LineRejected(
                RejectCode.NOT_AN_OBJECT, f"a command is a JSON object, not {json_type(obj)}"
            )
        scan = content.translate(_SCAN)
        profile_too_deep = False
        if scan.count(_OPENER) > MAX_LINE_DEPTH and deeper_than(obj, MAX_LINE_DEPTH):
            # Such a line is rejected whatever it holds; read shallow, nothing
            # below (the standard library's parser included) meets its depth.
            if parsed is content:
                parsed = flatten(content)
                obj = orjson.loads(parsed)
            profile_too_deep = deeper_than(obj.get(USER_PROFILE), MAX_PROFILE_DEPTH)
        huge_integer_at = None
        if _LONG_DIGIT_RUN in scan:
            obj = json.loads(parsed)  # exact integers (see _LONG_DIGIT_RUN)
            if obj.get("operation") == UPSERT:
                huge_integer_at = huge_integer_path(obj.get(USER_PROFILE), USER_PROFILE)
        nul_at = nul_field = None
        if self._refuse_nul and _NUL_ESCAPE in content:
            nul_field = nul_identifier(obj)
            if obj.get("operation") == UPSERT:
                nul_at = nul_path(obj.get(USER_PROFILE), USER_PROFILE)
        if not self._envelope.is_valid(obj):
            raise classify(
                obj,
                self._default_compartment_id,
                huge_integer_at,
                profile_too_deep,
                nul_at,
                nul_field,
            ) or LineRejected(
                RejectCode.INVALID_FIELD,
                self._envelope.explain(obj, redact=self.settings.redact),
            )
        key = resolve(obj, self._default_compartment_id)
        if nul_field is not None:
            raise _nul_in_identifier(nul_field)
        if profile_too_deep:
            raise _too_deep()
        if huge_integer_at is not None:
            raise _huge_integer(huge_integer_at)
        if nul_at is not None:
            raise _nul_in_profile(nul_at)
        operation: str = obj["operation"]
        if operation == UPSERT and self._declared is not None:
            misfit = self._declared.violation(obj[USER_PROFILE], redact=self.settings.redact)
            if misfit is not None:
                raise LineRejected(RejectCode.PROFILE_SCHEMA_VIOLATION, misfit)
        if (
            operation == UPSERT
            and self._profile is not None
            and not self._profile.is_valid(obj[USER_PROFILE])
        ):
            raise LineRejected(
                RejectCode.PROFILE_SCHEMA_VIOLATION,
                self._profile.explain(
                    obj[USER_PROFILE], redact=self.settings.redact, prefix="user_profile"
                ),
            )
        return Accepted(key, operation, obj, kind_of(operation, obj.get(FORCE_REPLACE)))


def load_accepted(content: bytes | memoryview) -> Command:
    """The command of a line that `CommandChecker` accepted."""
    return Command.from_object(orjson.loads(content))


def commands_by_key(
    lines: Iterable[tuple[bytes, int, bytes | memoryview]],
) -> tuple[dict[bytes, Iterator[Command]], int]:
    """Each identifier's commands from a bucket's (key, kind, line) in input
    order, parsed only as the fold reads them (`load_commands`), so the
    lines stay raw until then; and how many lines there were."""
    by_key: dict[bytes, tuple[bytearray, list[bytes | memoryview]]] = {}
    count = 0
    for key, kind, content in lines:
        sequence = by_key.get(key)
        if sequence is None:
            by_key[key] = sequence = (bytearray(), [])
        sequence[0].append(kind)
        sequence[1].append(content)
        count += 1
    return {key: load_commands(*sequence) for key, sequence in by_key.items()}, count


def load_commands(kinds: Sequence[int], lines: Sequence[bytes | memoryview]) -> Iterator[Command]:
    """One identifier's commands from its accepted lines and their kinds
    (`fold.kind_of`), in order. Parses only the lines whose content counts:
    not a DELETE, nor an UPSERT that a later command makes moot (`fold.moot`)."""
    first = moot(kinds)
    for index, line in enumerate(lines):
        if kinds[index] == DELETES:
            yield DELETE_COMMAND
        elif index < first:
            yield STAND_IN
        else:
            yield load_accepted(line)
