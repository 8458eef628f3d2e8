"""The reject record (SPEC §3): one NDJSON object per rejected line.

`{"file", "line", "code", "message", "raw"}`. `raw` is the line as read,
without its terminator; `--redact-rejects` leaves it out. Two additions keep a
reject lossless where a JSON string cannot: a line that is not valid UTF-8
also carries its exact bytes in `raw_base64`, and a line over the size limit
carries only its first bytes, marked `raw_truncated`.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .codes import LineRejected


def encode(
    file: str,
    line: int,
    rejected: LineRejected,
    content: bytes,
    *,
    truncated: bool = False,
    redact: bool = False,
) -> bytes:
    """The reject line (with its newline)."""
    record: dict[str, Any] = {
        "file": file,
        "line": line,
        "code": str(rejected.code),
        "message": rejected.message,
    }
    if not redact:
        try:
            record["raw"] = content.decode("utf-8")
        except UnicodeDecodeError:
            record["raw"] = content.decode("utf-8", errors="replace")
            record["raw_base64"] = base64.b64encode(content).decode("ascii")
        if truncated:
            record["raw_truncated"] = True
    return orjson.dumps(record) + b"\n"


def summary(record: dict[str, Any]) -> str:
    """`file:line: CODE message`, as in the report's `data`."""
    return f"{record['file']}:{record['line']}: {record['code']} {record['message']}"
