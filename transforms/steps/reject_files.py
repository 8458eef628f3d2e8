"""One split's rejects, as a file of the run's work folder.

No Beam here: `transforms.write_rejects` writes one per split with rejects, the
in-process run one per input, and the final step (`transforms.steps.finalize`)
concatenates them in input order.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from profile_import.core.locations import is_remote
from profile_import.stores.buckets import open_object


class RejectFile(NamedTuple):
    """One split's reject file, for the final step to gather in input order."""

    input_index: int
    first_line: int
    path: str
    rejects: int


def reject_file_name(sequence: tuple[int, int]) -> str:
    input_index, first_line = sequence
    return f"rejects-{input_index:06d}-{first_line:012d}.ndjson"


def write_reject_file(directory: str, sequence: tuple[int, int], payload: bytes) -> RejectFile:
    """Writes `payload` (NDJSON reject lines) as the file of the split `sequence`."""
    path = os.path.join(directory, reject_file_name(sequence))
    if is_remote(path):  # a store's work folder in a bucket: objects appear whole
        with open_object(path, "wb") as out:
            out.write(payload)
    else:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)  # a retried bundle replaces the same file
    return RejectFile(sequence[0], sequence[1], path, payload.count(b"\n"))
