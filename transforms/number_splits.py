"""NumberSplits: every input cut into ranges, each range's first line numbered.

    inputs ──SplitInputs──► ranges ──CountNewlines──► (input, count) ──GroupByInput
           ──NumberRanges──► numbered splits ──Reshuffle──► (to ParseCommands)

The launcher lists the inputs and reads none of their content: cutting them
and numbering their lines happen here, on the workers, in parallel (see
`inputs.plan`, `inputs.content`, `core.numbering`); `hash_inputs` fingerprints
them beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import apache_beam as beam

from profile_import.core.numbering import RangeCount, first_lines
from profile_import.inputs.content import count_range
from profile_import.inputs.plan import InputFile, InputSplit, split_ranges

Inputs = beam.pvalue.PCollection[InputFile]
Splits = beam.pvalue.PCollection[InputSplit]


class CountNewlinesFn(beam.DoFn):
    """`(input index, (split, its RangeCount or None))` for every range."""

    def __init__(self, transport_params: dict[str, Any] | None) -> None:
        self._transport_params = transport_params

    def process(self, split: InputSplit) -> Iterator[tuple[int, tuple[InputSplit, Any]]]:
        # A range read whole (compressed input) is the input's only one: line 1.
        count = None if split.end is None else count_range(split, self._transport_params)
        yield split.input_index, (split, count)


def _numbered(
    element: tuple[int, Iterable[tuple[InputSplit, RangeCount | None]]],
) -> Iterator[InputSplit]:
    _, ranges = element
    ranges = list(ranges)
    numbers = first_lines(count for _, count in ranges if count is not None)
    for split, count in ranges:
        yield replace(split, first_line=numbers[split.start] if count is not None else 1)


class NumberSplits(beam.PTransform[Inputs, Splits]):
    """Cuts every input into ranges and numbers each range's first line."""

    def __init__(self, split_bytes: int, transport_params: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._split_bytes = split_bytes
        self._transport_params = transport_params

    def expand(self, inputs: Inputs) -> Splits:
        split_bytes = self._split_bytes
        splits: Splits = (
            inputs
            | "SplitInputs" >> beam.FlatMap(lambda f: split_ranges(f, split_bytes))
            # Spread the ranges over the workers before reading them.
            | "SpreadRanges" >> beam.Reshuffle()
            | "CountNewlines" >> beam.ParDo(CountNewlinesFn(self._transport_params))
            | "GroupByInput" >> beam.GroupByKey()
            | "NumberRanges" >> beam.FlatMap(_numbered)
            # Numbered per input, by one worker: spread them again for the parse.
            | "SpreadSplits" >> beam.Reshuffle()
        )
        return splits
