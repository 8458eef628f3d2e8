"""DecideInputs: which inputs this run applies (SPEC §4, `core.idempotency`).

    (input, sha256, lines) per input ──CollectHashes──► DecideFromLedger ──► Decided

One element comes out, `Decided`: every input's content hash and decision,
read by ParseCommands (which reads no split of a skipped input) and by the
final step (which reports the skipped inputs and records the applied ones
in the ledger, as it publishes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.transforms import combiners

from profile_import.inputs.content import ContentHash
from profile_import.stores.base import ImportTarget, Version

from .steps.decisions import Decided, decide


class DecideFromLedgerFn(beam.DoFn):
    def __init__(
        self,
        store: ImportTarget | None,
        parent: Version | None,
        semantics: Mapping[str, Any],
        allow_reapply: bool,
        input_count: int | None,
    ) -> None:
        self._store = store
        self._parent = parent
        self._semantics = dict(semantics)
        self._allow_reapply = allow_reapply
        self._input_count = input_count

    def process(self, hashes: Iterable[ContentHash]) -> Iterator[Decided]:
        hashes = list(hashes)
        yield decide(
            hashes,
            self._store,
            self._parent,
            self._semantics,
            allow_reapply=self._allow_reapply,
            # None: the inputs are known only as they come (`import_profiles`).
            input_count=len(hashes) if self._input_count is None else self._input_count,
        )


Hashes = beam.pvalue.PCollection[ContentHash]
Decisions = beam.pvalue.PCollection[Decided]


class DecideInputs(beam.PTransform[Hashes, Decisions]):
    """One `Decided` element from the content hashes of every input."""

    def __init__(
        self,
        store: ImportTarget | None,
        parent: Version | None,
        semantics: Mapping[str, Any],
        allow_reapply: bool,
        input_count: int | None,
    ) -> None:
        super().__init__()
        self._fn = DecideFromLedgerFn(store, parent, semantics, allow_reapply, input_count)

    def expand(self, hashes: Hashes) -> Decisions:
        decided: Decisions = (
            hashes
            | "CollectHashes" >> combiners.ToList()
            | "DecideFromLedger" >> beam.ParDo(self._fn)
        )
        return decided
