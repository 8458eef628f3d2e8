"""Writes the Dataflow Flex Template's metadata.json from the options of `run`.

Usage: python tools/template_metadata.py   (tests/engines/test_dataflow.py checks it is current)
"""

from __future__ import annotations

import json
from pathlib import Path

from profile_import.runners.options import template_metadata

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    path = ROOT / "runners" / "dataflow" / "metadata.json"
    path.write_text(json.dumps(template_metadata(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
