"""How one stored profile is encoded: a store line.

A store line is `<key>\\t<record>\\n`, where `<key>` is the identifier's
canonical key (see `identifiers`) and `<record>` is exactly the line `export`
prints (SPEC §5): the identifier fields, `user_profile`, `created_at`,
`last_modified_at`. The key in front lets a run copy the profiles it does not
touch byte for byte, and lets `export` merge sorted shards, without parsing
their JSON. A key never holds a tab or a newline.
"""

from __future__ import annotations

import orjson

from .fold import StoredProfile
from .identifiers import Identifier

SEPARATOR = b"\t"


def encode(key: bytes, stored: StoredProfile) -> bytes:
    """The store line (with its newline) of the profile of identifier `key`."""
    record = {
        **Identifier.from_key(key).fields(),
        "user_profile": stored.profile,
        "created_at": stored.created_at,
        "last_modified_at": stored.last_modified_at,
    }
    return key + SEPARATOR + orjson.dumps(record) + b"\n"


def split(line: bytes) -> tuple[bytes, bytes]:
    """A store line's key and its export record (without the newline)."""
    key, sep, record = line.rstrip(b"\n").partition(SEPARATOR)
    if not sep:
        raise ValueError(f"not a store line: {line[:80]!r}")
    return key, record


def decode_record(record: bytes) -> StoredProfile:
    obj = orjson.loads(record)
    return StoredProfile(obj["user_profile"], obj["created_at"], obj["last_modified_at"])
