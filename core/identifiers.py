"""The one identifier of a command (SPEC §1).

A command names its user by exactly one of three forms: the account pair
(`compartment_id` + `user_account_id`), `email_hash`, or `user_agent_id`.
Integer values are normalised to their decimal string, so `1000` and `"1000"`
are the same compartment.

Each identifier has a canonical key, bytes that sort exactly like the
identifier: its kind letter (`a` account, `e` email_hash, `u` user_agent_id),
then each value's UTF-8 after a NUL byte: `a\0<compartment>\0<account>`,
`e\0<hash>`, `u\0<agent id>`. The few bytes below 0x10 (tab and newline
among them) are escaped as 0x01 and the byte plus 0x40, which keeps the order,
so a key never holds a tab, a newline or a NUL of its own. Sorting keys as
bytes is sorting identifiers by kind, then by their values as strings (code
point order, a value before any longer value it starts): that is the order of
`export`. Keys hash to the same bucket on every machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from .codes import LineRejected, RejectCode

COMPARTMENT_ID = "compartment_id"
USER_ACCOUNT_ID = "user_account_id"
EMAIL_HASH = "email_hash"
USER_AGENT_ID = "user_agent_id"

IDENTIFIER_FIELDS = (COMPARTMENT_ID, USER_ACCOUNT_ID, EMAIL_HASH, USER_AGENT_ID)

_ACCOUNT = "a"
_EMAIL = "e"
_AGENT = "u"
_ABSENT: Any = object()
_SEPARATOR = b"\x00"
_ESCAPE = 0x01
_ESCAPED_BELOW = 0x10
_ESCAPE_OFFSET = 0x40


def _escape(value: str) -> bytes:
    data = value.encode("utf-8")
    if value.isprintable():  # the usual case: no byte below 0x10
        return data
    out = bytearray()
    for byte in data:
        if byte < _ESCAPED_BELOW:
            out += bytes((_ESCAPE, byte + _ESCAPE_OFFSET))
        else:
            out.append(byte)
    return bytes(out)


def _unescape(data: bytes) -> str:
    if _ESCAPE not in data:
        return data.decode("utf-8")
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte - _ESCAPE_OFFSET)
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return out.decode("utf-8")


# One value after its prefix; `resolve` spells keys out with these (one per
# line): ~0.15 µs a key instead of ~0.5 µs through `make_key`'s generic form.
def _key1(prefix: bytes, value: str) -> bytes:
    return prefix + _escape(value)


def _key2(prefix: bytes, first: str, second: str) -> bytes:
    return _key1(prefix, first) + _key1(_SEPARATOR, second)


def make_key(kind: str, *values: str) -> bytes:
    return kind.encode("ascii") + b"".join(_key1(_SEPARATOR, v) for v in values)


class Identifier(NamedTuple):
    """A resolved identifier: its kind letter and normalised string values."""

    kind: str
    values: tuple[str, ...]

    @property
    def key(self) -> bytes:
        return make_key(self.kind, *self.values)

    def fields(self) -> dict[str, str]:
        """The identifier as the fields of an import line or an export line."""
        if self.kind == _ACCOUNT:
            return {COMPARTMENT_ID: self.values[0], USER_ACCOUNT_ID: self.values[1]}
        if self.kind == _EMAIL:
            return {EMAIL_HASH: self.values[0]}
        return {USER_AGENT_ID: self.values[0]}

    @classmethod
    def from_key(cls, key: bytes) -> Identifier:
        kind, *values = key.split(_SEPARATOR)
        return cls(kind.decode("ascii"), tuple(_unescape(v) for v in values))

    @classmethod
    def account(cls, compartment_id: str, user_account_id: str) -> Identifier:
        return cls(_ACCOUNT, (compartment_id, user_account_id))

    @classmethod
    def email_hash(cls, value: str) -> Identifier:
        return cls(_EMAIL, (value,))

    @classmethod
    def user_agent_id(cls, value: str) -> Identifier:
        return cls(_AGENT, (value,))

    @classmethod
    def asked(
        cls,
        *,
        email_hash: Any = None,
        user_agent_id: Any = None,
        compartment_id: Any = None,
        user_account_id: Any = None,
    ) -> Identifier | None:
        """The one profile a reader asks for: an email_hash, a user_agent_id,
        or a compartment_id with a user_account_id (None: not given); None
        unless exactly one of those is given, with valid values."""
        fields = {
            EMAIL_HASH: email_hash,
            USER_AGENT_ID: user_agent_id,
            COMPARTMENT_ID: compartment_id,
            USER_ACCOUNT_ID: user_account_id,
        }
        given: dict[str, str] = {}
        for name, value in fields.items():
            if value is not None:
                text = normalise_value(value)
                if text is None:
                    return None
                given[name] = text
        if given.keys() == {EMAIL_HASH}:
            return cls.email_hash(given[EMAIL_HASH])
        if given.keys() == {USER_AGENT_ID}:
            return cls.user_agent_id(given[USER_AGENT_ID])
        if given.keys() == {COMPARTMENT_ID, USER_ACCOUNT_ID}:
            return cls.account(given[COMPARTMENT_ID], given[USER_ACCOUNT_ID])
        return None


def fields_of_key(key: bytes) -> dict[str, str]:
    """The identifier of a key as the fields of an import or export line
    (`Identifier.from_key(key).fields()`, without building the identifier
    when no value was escaped: the store encodes a line this way for every
    profile it writes)."""
    if _ESCAPE in key:
        return Identifier.from_key(key).fields()
    kind, values = key[:1], key[2:]
    if kind == b"e":
        return {EMAIL_HASH: values.decode("utf-8")}
    if kind == b"u":
        return {USER_AGENT_ID: values.decode("utf-8")}
    compartment, _, account = values.partition(_SEPARATOR)
    return {COMPARTMENT_ID: compartment.decode("utf-8"), USER_ACCOUNT_ID: account.decode("utf-8")}


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


def _string_value(field: str, value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, str):
        raise LineRejected(RejectCode.INVALID_IDENTIFIER, f"{field} is an empty string")
    raise LineRejected(
        RejectCode.INVALID_IDENTIFIER, f"{field} must be a string, not {json_type(value)}"
    )


def resolve(obj: Mapping[str, Any], default_compartment_id: str | None = None) -> bytes:
    """The key of a command object's one identifier, or `LineRejected`.

    A field that is present counts as an attempt at its form, whatever its
    value: `{"email_hash": "", "user_agent_id": "x"}` names two identifiers.
    It runs for every line: it reads each field once and builds the key directly.
    """
    email = obj.get(EMAIL_HASH, _ABSENT)
    agent = obj.get(USER_AGENT_ID, _ABSENT)
    compartment = obj.get(COMPARTMENT_ID, _ABSENT)
    account = obj.get(USER_ACCOUNT_ID, _ABSENT)
    has_account = compartment is not _ABSENT or account is not _ABSENT
    forms = has_account + (email is not _ABSENT) + (agent is not _ABSENT)
    if forms != 1:
        if forms == 0:
            raise LineRejected(
                RejectCode.MISSING_IDENTIFIER,
                "no identifier: give compartment_id + user_account_id, email_hash or user_agent_id",
            )
        named = [f for f in IDENTIFIER_FIELDS if f in obj]
        raise LineRejected(
            RejectCode.MULTIPLE_IDENTIFIERS,
            f"more than one identifier ({', '.join(named)}): a line names exactly one",
        )
    if email is not _ABSENT:
        return _key1(b"e\x00", _string_value(EMAIL_HASH, email))
    if agent is not _ABSENT:
        return _key1(b"u\x00", _string_value(USER_AGENT_ID, agent))

    if account is _ABSENT:
        raise LineRejected(RejectCode.INVALID_IDENTIFIER, "compartment_id without user_account_id")
    account_value = normalise_value(account)
    if account_value is None:
        raise _invalid(USER_ACCOUNT_ID, account)
    if compartment is not _ABSENT:
        compartment_value = normalise_value(compartment)
        if compartment_value is None:
            raise _invalid(COMPARTMENT_ID, compartment)
    elif default_compartment_id is not None:
        compartment_value = default_compartment_id
    else:
        raise LineRejected(
            RejectCode.INVALID_IDENTIFIER,
            "user_account_id without compartment_id (and no --default-compartment-id)",
        )
    return _key2(b"a\x00", compartment_value, account_value)


# bool before int: a JSON boolean is a Python int too.
_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages that must not echo data."""
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__
