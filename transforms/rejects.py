"""WriteRejects: every split's rejects into a file of the run's work folder.

The final step (`transforms.commit`) concatenates the files of the inputs the
run applies, in sequence order, into the one rejects file the user asked for,
so the rejects come out in input order without a global sort, and a run with
millions of rejects never holds them in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import smart_open

from profile_import.inputs.plan import is_remote


class RejectFile(NamedTuple):
    """One split's reject file, for the final step to gather in input order."""

    input_index: int
    first_line: int
    path: str
    rejects: int


def reject_file_name(sequence: tuple[int, int]) -> str:
    input_index, first_line = sequence
    return f"rejects-{input_index:06d}-{first_line:012d}.ndjson"


class WriteRejectFileFn(beam.DoFn):
    def __init__(self, directory: str) -> None:
        self._directory = directory

    def process(self, element: tuple[tuple[int, int], bytes]) -> Iterator[RejectFile]:
        sequence, payload = element
        path = os.path.join(self._directory, reject_file_name(sequence))
        if is_remote(path):  # a store's work folder in a bucket: objects appear whole
            with smart_open.open(path, "wb", compression="disable") as out:
                out.write(payload)
            yield RejectFile(sequence[0], sequence[1], path, payload.count(b"\n"))
            return
        os.makedirs(self._directory, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)  # a retried bundle replaces the same file
        yield RejectFile(sequence[0], sequence[1], path, payload.count(b"\n"))


SplitRejects = beam.pvalue.PCollection[tuple[tuple[int, int], bytes]]
Paths = beam.pvalue.PCollection[RejectFile]


class WriteRejects(beam.PTransform[SplitRejects, Paths]):
    def __init__(self, directory: str) -> None:
        super().__init__()
        self._directory = directory

    def expand(self, rejects: SplitRejects) -> Paths:
        paths: Paths = rejects | "WriteRejectFiles" >> beam.ParDo(
            WriteRejectFileFn(self._directory)
        )
        return paths
