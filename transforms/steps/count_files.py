"""What each split read and checked, as a small file of the run's work folder.

No Beam here. The check step (`transforms.parse_commands`) writes one file per split
once it has checked all of the split's lines, beside the split's rejects; a
retried bundle replaces the same file, so a split is never counted twice. A
run that succeeds counts what came to its final step as data; a pipeline
that crashes before its final step (a dead worker, a full disk, a lost
publish) never gets there, and its launcher sums these files instead
(`read_count_files`): the FAILED report counts what the finished splits read
and checked, a split cut short counts nothing.

The work folder is a folder on this machine or a prefix in a bucket (the
workers of a remote runner write there), so the files are read back the
same way wherever the run's workers were.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from profile_import.stores.folders import open_files

from .finalize import add_counts

_PREFIX = "counts-"
_SUFFIX = ".json"


def count_file_name(sequence: tuple[int, int]) -> str:
    input_index, first_line = sequence
    return f"{_PREFIX}{input_index:06d}-{first_line:012d}{_SUFFIX}"


def write_count_file(directory: str, sequence: tuple[int, int], counts: Mapping[str, int]) -> None:
    """Writes the counts of the split `sequence` (input index, first line),
    whole or not at all: a temporary name then a rename, or one object."""
    files = open_files(directory)
    files.makedirs("")
    files.write_atomic(count_file_name(sequence), orjson.dumps(dict(counts)))


def read_count_files(directory: str) -> dict[int, dict[str, int]]:
    """The counts of the splits that finished, summed per input index (none:
    an empty mapping). A file being replaced, or unreadable, counts nothing."""
    files = open_files(directory)
    per_input: dict[int, list[dict[str, int]]] = {}
    for name in files.listdir(""):
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue  # a temporary name, mid-rename
        try:
            input_index = int(name[len(_PREFIX) :].split("-", 1)[0])
            counts = orjson.loads(files.read_bytes(name))
        except (OSError, ValueError):
            continue
        if isinstance(counts, dict):
            per_input.setdefault(input_index, []).append(counts)
    return {index: add_counts(per_input[index]) for index in sorted(per_input)}
