"""WriteRejects: every split's rejects into a file of the run's work folder.

The final step (`transforms.steps.finalize`) concatenates the files of the inputs the
run applies, in sequence order, into the one rejects file the user asked for,
so the rejects come out in input order without a global sort, and a run with
millions of rejects never holds them in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from .steps.reject_files import RejectFile, write_reject_file


class WriteRejectFileFn(beam.DoFn):
    def __init__(self, directory: str) -> None:
        self._directory = directory

    def process(self, element: tuple[tuple[int, int], bytes]) -> Iterator[RejectFile]:
        sequence, payload = element
        yield write_reject_file(self._directory, sequence, payload)


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
