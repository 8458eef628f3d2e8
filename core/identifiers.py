"""The one identifier of a command (SPEC §1).

A command names its user by exactly one of three forms: the account pair
(`compartment_id` + `user_account_id`), `email_hash`, or `user_agent_id`.
Integer values are normalised to their decimal string, so `1000` and `"1000"`
are the same compartment.

Each identifier has a canonical key: the compact JSON array of a kind letter
and its values, e.g. `["a","1000","u1"]`, `["e","<hash>"]`, `["u","vec:1"]`.
Keys are bytes, compare in a stable order (that is the order of `export`),
contain no tab or newline, and hash to the same bucket on every machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .codes import LineRejected, RejectCode

COMPARTMENT_ID = "compartment_id"
USER_ACCOUNT_ID = "user_account_id"
EMAIL_HASH = "email_hash"
USER_AGENT_ID = "user_agent_id"

IDENTIFIER_FIELDS = (COMPARTMENT_ID, USER_ACCOUNT_ID, EMAIL_HASH, USER_AGENT_ID)

_ACCOUNT = "a"
_EMAIL = "e"
_AGENT = "u"


@dataclass(frozen=True, slots=True)
class Identifier:
    """A resolved identifier: its kind letter and normalised string values."""

    kind: str
    values: tuple[str, ...]

    @property
    def key(self) -> bytes:
        return orjson.dumps([self.kind, *self.values])

    def fields(self) -> dict[str, str]:
        """The identifier as the fields of an import line or an export line."""
        if self.kind == _ACCOUNT:
            return {COMPARTMENT_ID: self.values[0], USER_ACCOUNT_ID: self.values[1]}
        if self.kind == _EMAIL:
            return {EMAIL_HASH: self.values[0]}
        return {USER_AGENT_ID: self.values[0]}

    @classmethod
    def from_key(cls, key: bytes) -> Identifier:
        kind, *values = orjson.loads(key)
        return cls(kind, tuple(values))

    @classmethod
    def account(cls, compartment_id: str, user_account_id: str) -> Identifier:
        return cls(_ACCOUNT, (compartment_id, user_account_id))

    @classmethod
    def email_hash(cls, value: str) -> Identifier:
        return cls(_EMAIL, (value,))

    @classmethod
    def user_agent_id(cls, value: str) -> Identifier:
        return cls(_AGENT, (value,))


def bucket_of(key: bytes, buckets: int) -> int:
    """The store bucket of a key: stable across processes, runs and machines."""
    return zlib.crc32(key) % buckets


def normalise_value(value: Any) -> str | None:
    """An identifier value as its string, or None when it is not a valid one.

    Strings must be non-empty; integers (not booleans, not floats) become their
    decimal string.
    """
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _invalid(field: str, value: Any) -> LineRejected:
    if isinstance(value, str):
        return LineRejected(RejectCode.INVALID_IDENTIFIER, f"{field} is an empty string")
    return LineRejected(
        RejectCode.INVALID_IDENTIFIER,
        f"{field} must be a non-empty string or an integer, not {json_type(value)}",
    )


def _string_field(obj: Mapping[str, Any], field: str) -> str:
    value = obj[field]
    if isinstance(value, str) and value:
        return value
    if isinstance(value, str):
        raise LineRejected(RejectCode.INVALID_IDENTIFIER, f"{field} is an empty string")
    raise LineRejected(
        RejectCode.INVALID_IDENTIFIER, f"{field} must be a string, not {json_type(value)}"
    )


def resolve(obj: Mapping[str, Any], default_compartment_id: str | None = None) -> Identifier:
    """The one identifier of a command object, or `LineRejected`.

    A field that is present counts as an attempt at its form, whatever its
    value: `{"email_hash": "", "user_agent_id": "x"}` names two identifiers.
    """
    has_account = COMPARTMENT_ID in obj or USER_ACCOUNT_ID in obj
    forms = int(has_account) + int(EMAIL_HASH in obj) + int(USER_AGENT_ID in obj)
    if forms == 0:
        raise LineRejected(
            RejectCode.MISSING_IDENTIFIER,
            "no identifier: give compartment_id + user_account_id, email_hash or user_agent_id",
        )
    if forms > 1:
        named = [f for f in IDENTIFIER_FIELDS if f in obj]
        raise LineRejected(
            RejectCode.MULTIPLE_IDENTIFIERS,
            f"more than one identifier ({', '.join(named)}): a line names exactly one",
        )
    if EMAIL_HASH in obj:
        return Identifier.email_hash(_string_field(obj, EMAIL_HASH))
    if USER_AGENT_ID in obj:
        return Identifier.user_agent_id(_string_field(obj, USER_AGENT_ID))

    if USER_ACCOUNT_ID not in obj:
        raise LineRejected(
            RejectCode.INVALID_IDENTIFIER, "compartment_id without user_account_id"
        )
    account = normalise_value(obj[USER_ACCOUNT_ID])
    if account is None:
        raise _invalid(USER_ACCOUNT_ID, obj[USER_ACCOUNT_ID])
    if COMPARTMENT_ID in obj:
        compartment = normalise_value(obj[COMPARTMENT_ID])
        if compartment is None:
            raise _invalid(COMPARTMENT_ID, obj[COMPARTMENT_ID])
    elif default_compartment_id is not None:
        compartment = default_compartment_id
    else:
        raise LineRejected(
            RejectCode.INVALID_IDENTIFIER,
            "user_account_id without compartment_id (and no --default-compartment-id)",
        )
    return Identifier.account(compartment, account)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages that must not echo data."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
