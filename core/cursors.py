"""The opaque `--cursor` of `profile-import list`.

A cursor names the store version a listing reads, the key of the last
profile it returned, and the filters it was made for: the next page then
reads the same version after that key, whatever runs published meanwhile.
It is URL-safe base64 of a small JSON document; callers must not look inside.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

import orjson

_FORMAT = 1


class CursorError(ValueError):
    """A `--cursor` that this command did not make."""


class Cursor(NamedTuple):
    version: int
    after: bytes  # the key of the last profile of the previous page
    query: str  # `Query.digest()` of the filters it was made for

    def encode(self) -> str:
        doc = {
            "f": _FORMAT,
            "v": self.version,
            "k": base64.urlsafe_b64encode(self.after).decode("ascii"),
            "q": self.query,
        }
        return base64.urlsafe_b64encode(orjson.dumps(doc)).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            padded = text + "=" * (-len(text) % 4)
            doc = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
            if not isinstance(doc, dict) or doc.get("f") != _FORMAT:
                raise ValueError("unknown format")
            version, key, query = doc["v"], doc["k"], doc["q"]
            if not (isinstance(version, int) and isinstance(key, str) and isinstance(query, str)):
                raise ValueError("bad fields")
            return cls(version, base64.urlsafe_b64decode(key.encode("ascii")), query)
        except (ValueError, KeyError, UnicodeEncodeError, binascii.Error) as e:
            raise CursorError(
                "--cursor is not a cursor of `profile-import list` (copy next_cursor as printed)"
            ) from e
