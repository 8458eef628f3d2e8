"""How deep a JSON value nests, and reading lines nested deeper than orjson reads.

SPEC §3: `user_profile` may nest at most 100 levels (the profile itself is
level 1; each object or array inside a value adds one). A line's envelope is
one more level, so an acceptable line nests at most 101 levels, which also
keeps every stored profile far below orjson's limit for writing (254 levels).

orjson reads up to 1024 levels and refuses deeper JSON with "depth limit
exceeded", although it is valid JSON. `flatten` reads such a line in parts:
every container that opens deeper than `keep` levels is checked on its own
with orjson and replaced by `[]`; the rest, now shallow, is what the caller
parses. The line is valid JSON exactly when every part is, since a part is a
JSON value put back in a value's place. The verdict on the line (which code
wins) then comes from the shallow rest, where a profile cut this way is still
deeper than the limit.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_PROFILE_DEPTH = 100
# A line whose profile holds the deepest allowed value: the envelope adds one.
MAX_LINE_DEPTH = MAX_PROFILE_DEPTH + 1
# `flatten` keeps one level more than a good line can have, and its `[]`
# placeholders add another: a cut profile is 102 levels deep, still too deep.
_KEEP = MAX_LINE_DEPTH + 1

# A JSON string (escapes included) or a bracket. Only brackets outside strings
# nest; matching whole strings steps over the brackets inside them.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{")
_CLOSER_OF = {ord("["): ord("]"), ord("{"): ord("}")}
_PLACEHOLDER = b"[]"


class NotJson(ValueError):
    """The line is not valid JSON (found while reading it in parts)."""


def deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` levels (a scalar is level 0).

    Level by level, without recursion, and it stops as soon as the answer is
    known; its cost is one step per array item or object member above the limit.
    """
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            below.extend(item for item in items if isinstance(item, dict | list))
        level = below
    return False


def is_depth_error(error: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused a document only for nesting past its own limit."""
    return error.msg.startswith("depth limit exceeded")


def flatten(content: bytes, keep: int = _KEEP) -> bytes:
    """`content` with every container deeper than `keep` levels replaced by `[]`.

    Raises `NotJson` when the line is not valid JSON. One pass over the
    line's strings and brackets: ~0.3 µs a token, so ~0.3 s for a line of 1 MiB
    of brackets; only lines orjson refuses for their depth take it.
    """
    # Each open part: [start offset, its cut-out children as (start, end)].
    parts: list[tuple[int, list[tuple[int, int]]]] = [(0, [])]
    closers: list[int] = []
    for match in _TOKENS.finditer(content):
        byte = content[match.start()]
        if byte in _OPENERS:
            closers.append(_CLOSER_OF[byte])
            if len(closers) % keep == 1 and len(closers) > 1:
                parts.append((match.start(), []))
        elif byte != ord('"'):
            if not closers or closers.pop() != byte:
                raise NotJson("brackets do not match")
            if len(closers) % keep == 0 and len(parts) > 1:
                start, children = parts.pop()
                end = match.end()
                _check_part(_assemble(content, start, end, children))
                parts[-1][1].append((start, end))
    if closers or len(parts) != 1:
        raise NotJson("brackets do not match")
    shallow = _assemble(content, 0, len(content), parts[0][1])
    _check_part(shallow)
    return shallow


def _assemble(content: bytes, start: int, end: int, children: list[tuple[int, int]]) -> bytes:
    pieces: list[bytes] = []
    at = start
    for child_start, child_end in children:
        pieces += (content[at:child_start], _PLACEHOLDER)
        at = child_end
    pieces.append(content[at:end])
    return b"".join(pieces)


def _check_part(part: bytes) -> None:
    try:
        orjson.loads(part)
    except orjson.JSONDecodeError as e:
        raise NotJson(e.msg) from None
