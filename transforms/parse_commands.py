"""ParseCommands: input splits in, per-bucket command batches and rejects out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

from profile_import.core.codes import RejectCode
from profile_import.core.commands import CheckSettings
from profile_import.inputs.lines import Line
from profile_import.inputs.plan import InputSplit

from .steps import batches, metrics, progress
from .steps.check_lines import SplitTally, checked_by_bucket
from .steps.count_files import write_count_file
from .steps.decisions import Decided
from .steps.gc_pause import paused

COMMANDS = "commands"
REJECTS = "rejects"
COUNTS = "counts"


class ParseSplitFn(beam.DoFn):
    """Reads one split and checks every line.

    Main output: `(bucket, CommandBatch)`, one per bucket the split touches.
    `REJECTS` output: `((input index, first line), reject lines)`, one per split
    with rejects, already encoded as the rejects file's NDJSON.
    `COUNTS` output: `(input index, counts)`, one per split: what the report
    counts (`core.report.LINE_COUNTS` and `rejected.<CODE>`), as data, so that
    the final step checks them whatever the runner does with metrics.
    With `counts_dir`, the same counts are also written there, one file per
    split (`count_files`): what the report of a pipeline that crashes before
    its final step counts.
    """

    def __init__(
        self,
        settings: CheckSettings,
        buckets: int,
        progress_dir: str | None = None,
        transport_params: dict[str, Any] | None = None,
        spill_dir: str | None = None,
        counts_dir: str | None = None,
    ) -> None:
        self._settings = settings
        self._buckets = buckets
        self._progress_dir = progress_dir
        self._spill_dir = spill_dir
        self._counts_dir = counts_dir
        self._transport_params = transport_params
        ns = metrics.NAMESPACE
        self._lines = Metrics.counter(ns, metrics.LINES)
        self._blank = Metrics.counter(ns, metrics.BLANK)
        self._accepted = Metrics.counter(ns, metrics.ACCEPTED)
        self._rejected = Metrics.counter(ns, metrics.REJECTED)
        self._upserts = Metrics.counter(ns, metrics.UPSERTS)
        self._deletes = Metrics.counter(ns, metrics.DELETES)
        self._by_code = {
            code: Metrics.counter(ns, metrics.REJECTED_PREFIX + code) for code in RejectCode
        }

    def setup(self) -> None:
        # Compiling the schemas is the expensive part: once per worker.
        self._checker = self._settings.build()
        if self._spill_dir is not None:
            os.makedirs(self._spill_dir, exist_ok=True)

    def process(self, split: InputSplit, decided: Decided | None = None) -> Iterator[Any]:
        # An input the store applied before (or given twice) is not read at all.
        # (No bare `return` here: Beam warns of a `process` that both yields and returns.)
        if decided is None or split.input_index in decided.applied:
            with paused():
                outputs = list(self._parse(split))
            yield from outputs

    def _parse(self, split: InputSplit, lines: Iterable[Line] | None = None) -> Iterator[Any]:
        tally = SplitTally()
        split_name = f"{split.input_index}-{split.first_line}"
        per_bucket = checked_by_bucket(
            split,
            self._checker,
            self._settings,
            tally,
            self._buckets,
            self._transport_params,
            progress=progress.marker(self._progress_dir, split_name, split.size),
            lines=lines,
        )
        position = (split.input_index, split.first_line)
        with batches.spilled(self._spill_dir, *position) as spill:
            for bucket, in_bucket in per_bucket.items():
                batch = batches.encode(
                    *position, in_bucket.keys, in_bucket.kinds, in_bucket.lines, spill
                )
                yield (bucket, batch)
        if tally.rejected:
            encoded = tally.reject_lines(split.display_name, redact=self._settings.redact)
            yield beam.pvalue.TaggedOutput(REJECTS, (split.sequence, b"".join(encoded)))
        # Counted once per split, not per line: a counter update costs more than a line.
        counts = tally.counts()
        if self._counts_dir is not None:
            write_count_file(self._counts_dir, split.sequence, counts)
        yield beam.pvalue.TaggedOutput(COUNTS, (split.input_index, counts))
        # Beam metrics mirror the counts for monitoring; nothing depends on them.
        self._lines.inc(tally.lines)
        self._blank.inc(tally.blank)
        self._rejected.inc(tally.rejected)
        self._accepted.inc(tally.accepted)
        self._upserts.inc(tally.upserts)
        self._deletes.inc(tally.accepted - tally.upserts)
        for code, count in tally.rejected_by_code.items():
            self._by_code[code].inc(count)
        progress.mark_members(self._progress_dir, f"buckets-{split_name}", per_bucket)


Splits = beam.pvalue.PCollection[InputSplit]

_Expand = TypeVar("_Expand", bound=Callable[..., Any])


def _hidden_from_beam(expand: _Expand) -> _Expand:
    """Beam (2.78 on) reads an `expand`'s annotations as its type hints and logs a
    warning, on the root logger, for any that is not a PCollection: mypy reads them."""
    return cast(_Expand, beam.typehints.no_annotations(expand))


class ParseCommands(beam.PTransform[Splits, beam.pvalue.DoOutputsTuple]):
    """Reads numbered splits and checks their lines (SPEC §1, §3).

    Returns a tuple-like result: `.commands` are `(bucket, CommandBatch)`,
    `.rejects` are `((input index, first line), NDJSON reject lines)`,
    `.counts` are `(input index, counts)` per split. With `decided` (one
    `Decided` element, from `DecideInputs`), the splits of the inputs the run
    skips are not read: an unchanged re-run parses and applies nothing.
    `counts_dir`: where each split's counts are also written (`count_files`).
    """

    def __init__(
        self,
        settings: CheckSettings,
        buckets: int,
        progress_dir: str | None = None,
        transport_params: dict[str, Any] | None = None,
        spill_dir: str | None = None,
        decided: beam.pvalue.PCollection[Decided] | None = None,
        counts_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._fn = ParseSplitFn(
            settings, buckets, progress_dir, transport_params, spill_dir, counts_dir
        )
        self._decided = decided

    @_hidden_from_beam
    def expand(self, splits: Splits) -> beam.pvalue.DoOutputsTuple:
        side = {} if self._decided is None else {"decided": beam.pvalue.AsSingleton(self._decided)}
        outputs: beam.pvalue.DoOutputsTuple = splits | "CheckLines" >> beam.ParDo(
            self._fn, **side
        ).with_outputs(REJECTS, COUNTS, main=COMMANDS)
        return outputs
