"""The identifiers file of `profile-import get --ids`: one identifier a line.

Each line is a JSON object in the import's identifier fields:
`{"compartment_id": "1000", "user_account_id": "alice"}`, `{"email_hash": "..."}`
or `{"user_agent_id": "..."}`, with the import's rules (one identifier,
integers normalised, no empty strings). Blank lines are skipped. Any other
field, or a line that is not such an object, is an error naming its line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import orjson

from .codes import LineRejected
from .identifiers import IDENTIFIER_FIELDS, json_type, resolve


class IdsError(ValueError):
    """A line of an identifiers file that names no identifier."""


class AskedIds(NamedTuple):
    keys: list[bytes]  # distinct keys, in the order first asked
    asked: int  # non-blank lines
    duplicates: int  # lines naming an identifier asked before


def parse_line(content: bytes) -> bytes:
    """The key of the identifier of one line; `IdsError` says why not."""
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError as e:
        raise IdsError(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise IdsError(f"an identifier is a JSON object, not {json_type(obj)}")
    unknown = sorted(name for name in obj if name not in IDENTIFIER_FIELDS)
    if unknown:
        raise IdsError(f"unknown field {unknown[0][:40]!r} (only {', '.join(IDENTIFIER_FIELDS)})")
    try:
        return resolve(obj)
    except LineRejected as e:
        raise IdsError(e.message) from None


def read_ids(lines: Iterable[bytes]) -> AskedIds:
    """Every identifier of a file; `IdsError` names the first bad line's number."""
    keys: dict[bytes, None] = {}
    asked = duplicates = 0
    for number, line in enumerate(lines, start=1):
        content = line.rstrip(b"\r\n")
        if number == 1:
            content = content.removeprefix(b"\xef\xbb\xbf")
        if not content.strip():
            continue
        try:
            key = parse_line(content)
        except IdsError as e:
            raise IdsError(f"line {number}: {e}") from None
        asked += 1
        if key in keys:
            duplicates += 1
        else:
            keys[key] = None
    return AskedIds(list(keys), asked, duplicates)
