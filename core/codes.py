"""Reject codes (SPEC §3), in precedence order.

When a line has several faults, the code that comes first in `PRECEDENCE` wins.
The values are part of the public contract: never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class RejectCode(StrEnum):
    LINE_TOO_LARGE = "LINE_TOO_LARGE"
    INVALID_JSON = "INVALID_JSON"
    NOT_AN_OBJECT = "NOT_AN_OBJECT"
    INVALID_OPERATION = "INVALID_OPERATION"
    MISSING_IDENTIFIER = "MISSING_IDENTIFIER"
    MULTIPLE_IDENTIFIERS = "MULTIPLE_IDENTIFIERS"
    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    MISSING_FORCE_REPLACE = "MISSING_FORCE_REPLACE"
    MISSING_USER_PROFILE = "MISSING_USER_PROFILE"
    INVALID_FIELD = "INVALID_FIELD"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    PROFILE_SCHEMA_VIOLATION = "PROFILE_SCHEMA_VIOLATION"


# Enum members iterate in definition order, which is the table's order.
PRECEDENCE: tuple[RejectCode, ...] = tuple(RejectCode)


class LineRejected(Exception):
    """A line that cannot be applied: its code and a human message.

    Raised by the pure checks and turned into a reject record by the caller,
    who knows the file, line number and raw text.
    """

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
