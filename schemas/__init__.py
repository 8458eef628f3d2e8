"""JSON Schema documents shipped with the package.

`command.schema.json` is the command envelope (SPEC §1), used by the pipeline
for every line's verdict.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

COMMAND_SCHEMA = "command.schema.json"


@cache
def _load_text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load(name: str = COMMAND_SCHEMA) -> dict[str, Any]:
    """A fresh copy of a shipped schema document."""
    schema: dict[str, Any] = json.loads(_load_text(name))
    return schema
