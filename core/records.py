"""How one stored profile is encoded: a store line.

A store line is `<key>\\t<record>\\n`, where `<key>` is the identifier's
canonical key (see `identifiers`) and `<record>` is exactly the line `export`
prints (SPEC §5): the identifier fields, `user_profile`, `created_at`,
`last_modified_at`. The key in front lets a run copy the profiles it does not
touch byte for byte, and lets `export` merge sorted shards, without parsing
their JSON. A key never holds a tab or a newline.
"""

from __future__ import annotations

from typing import Any

import orjson

from .fold import StoredProfile
from .identifiers import IDENTIFIER_FIELDS, Identifier, fields_of_key

SEPARATOR = b"\t"
_SYSTEM_FIELDS = ("user_profile", "created_at", "last_modified_at")
_VALUES_OF_KIND = {"a": 2, "e": 1, "u": 1}


def encode(key: bytes, stored: StoredProfile) -> bytes:
    """The store line (with its newline) of the profile of identifier `key`."""
    record: dict[str, Any] = fields_of_key(key)
    record["user_profile"] = stored.profile
    record["created_at"] = stored.created_at
    record["last_modified_at"] = stored.last_modified_at
    return b"".join((key, SEPARATOR, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)))


def split(line: bytes) -> tuple[bytes, bytes]:
    """A store line's key and its export record (without the newline)."""
    key, sep, record = line.rstrip(b"\n").partition(SEPARATOR)
    if not sep:
        raise ValueError(f"not a store line: {line[:80]!r}")
    return key, record


def decode_record(record: bytes) -> StoredProfile:
    obj = orjson.loads(record)
    return StoredProfile(obj["user_profile"], obj["created_at"], obj["last_modified_at"])


def problem(line: bytes) -> str | None:
    """What is wrong with a store line (with its newline), or None if nothing.

    The full check, for `verify`: runs never parse the lines they only copy.
    """
    if not line.endswith(b"\n"):
        return "is cut short (no newline at its end)"
    key, sep, record = line[:-1].partition(SEPARATOR)
    if not sep:
        return "is not a store line (no tab after a key)"
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        return "holds a record that is not valid JSON"
    if not isinstance(obj, dict):
        return "holds a record that is not a JSON object"
    try:
        identifier = Identifier.from_key(key)
    except (UnicodeDecodeError, ValueError):
        identifier = None
    if (
        identifier is None
        or _VALUES_OF_KIND.get(identifier.kind) != len(identifier.values)
        or identifier.key != key
    ):
        return "has a key that is not an identifier's"
    if {k: v for k, v in obj.items() if k in IDENTIFIER_FIELDS} != identifier.fields():
        return "has a key that is not its record's identifier"
    unknown = sorted(set(obj) - set(IDENTIFIER_FIELDS) - set(_SYSTEM_FIELDS))
    if unknown:
        return f"holds an unknown field {unknown[0]!r}"
    if not isinstance(obj.get("user_profile"), dict):
        return "holds no user_profile object"
    if not all(isinstance(obj.get(name), str) for name in _SYSTEM_FIELDS[1:]):
        return "lacks created_at or last_modified_at"
    return None
