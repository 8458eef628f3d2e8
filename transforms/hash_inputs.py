"""HashInputs: each input's identity, read on the workers before anything is applied.

inputs ──HashContent──► (input, sha256, lines)   (to DecideInputs)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from profile_import.inputs.content import ContentHash, hash_content
from profile_import.inputs.plan import InputFile

Inputs = beam.pvalue.PCollection[InputFile]
Hashes = beam.pvalue.PCollection[ContentHash]


class HashContentFn(beam.DoFn):
    def __init__(self, transport_params: dict[str, Any] | None) -> None:
        self._transport_params = transport_params

    def process(self, file: InputFile) -> Iterator[ContentHash]:
        yield hash_content(file, self._transport_params)


class HashInputs(beam.PTransform[Inputs, Hashes]):
    """Each input's identity (SPEC §4): the sha256 of its content, decompressed,
    and its line count. One pass per input, inputs in parallel."""

    def __init__(self, transport_params: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._transport_params = transport_params

    def expand(self, inputs: Inputs) -> Hashes:
        hashes: Hashes = (
            inputs
            | "SpreadInputs" >> beam.Reshuffle()
            | "HashContent" >> beam.ParDo(HashContentFn(self._transport_params))
        )
        return hashes
