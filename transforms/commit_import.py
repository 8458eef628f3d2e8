"""CommitImport: the run's one final step, after every staged write is done.

    Decided, counts per input, bucket results, reject files ──► CommitFn
        (`transforms.steps.finalize`: check the counts and the reject limits,
        gather the rejects, publish or discard, write the report)

Its inputs are side inputs, complete before it starts, so it runs once
every bucket and reject file is written, like Beam's `FileBasedSink`
finalize step; it is safe to retry (see `Finalizer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import apache_beam as beam

from profile_import.inputs.plan import InputFile

from .steps.decisions import Decided
from .steps.finalize import Finalizer, add_counts, write_report
from .steps.reject_files import RejectFile


class CommitFn(beam.DoFn):
    def __init__(self, finalizer: Finalizer) -> None:
        self._finalizer = finalizer

    def process(
        self,
        _: object,
        decided: Decided,
        input_counts: Mapping[int, Mapping[str, int]],
        totals: Mapping[str, int],
        reject_files: Sequence[RejectFile],
        inputs: Sequence[InputFile] | None = None,
    ) -> Iterator[dict[str, Any]]:
        finalizer = self._finalizer
        if inputs is not None:  # known only as they came (`import_profiles`)
            ctx = replace(finalizer.ctx, inputs=tuple(sorted(inputs, key=lambda f: f.index)))
            finalizer = replace(finalizer, ctx=ctx)
        report = finalizer.finalize(decided, input_counts, totals, reject_files)
        write_report(finalizer.ctx, report)
        yield report


Results = beam.pvalue.PCollection[dict[str, Any]]


class CommitImport(beam.PTransform[beam.pvalue.PBegin, Results]):
    """The final step: one report out, after every staged write is done.

    Takes what the steps before it computed, as data: `decided` (one
    `Decided`), `counts` (`(input index, counts)` per split), `buckets`
    (`(bucket, results)` per bucket applied) and `rejects` (`RejectFile`s).
    """

    def __init__(
        self,
        finalizer: Finalizer,
        decided: beam.pvalue.PCollection[Decided],
        counts: beam.pvalue.PCollection[tuple[int, dict[str, int]]],
        buckets: beam.pvalue.PCollection[tuple[int, dict[str, int]]],
        rejects: beam.pvalue.PCollection[RejectFile],
        inputs: beam.pvalue.PCollection[InputFile] | None = None,
    ) -> None:
        super().__init__()
        self._inputs = inputs
        self._finalizer = finalizer
        self._decided = decided
        self._counts = counts
        self._buckets = buckets
        self._rejects = rejects

    def expand(self, pbegin: beam.pvalue.PBegin) -> Results:
        per_input = self._counts | "CountsPerInput" >> beam.CombinePerKey(add_counts)
        totals = (
            self._buckets
            | "BucketResults" >> beam.Values()
            | "SumBucketResults" >> beam.CombineGlobally(add_counts)
        )
        reports_: Results = (
            pbegin
            | "Once" >> beam.Create([None])
            | "CheckAndCommit"
            >> beam.ParDo(
                CommitFn(self._finalizer),
                decided=beam.pvalue.AsSingleton(self._decided),
                input_counts=beam.pvalue.AsDict(per_input),
                totals=beam.pvalue.AsSingleton(totals),
                reject_files=beam.pvalue.AsList(self._rejects),
                **({} if self._inputs is None else {"inputs": beam.pvalue.AsList(self._inputs)}),
            )
        )
        return reports_
