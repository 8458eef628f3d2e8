"""DecideInputs: which inputs this run applies (SPEC §4, `core.idempotency`).

    (input, sha256, lines) per input ──CollectHashes──► DecideFromLedger ──► Decided

One element comes out, `Decided`: every input's content hash and decision,
read by ParseCommands (which reads no split of a skipped input) and by the
final step (which reports the skipped inputs and records the applied ones
in the ledger, as it publishes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.transforms import combiners

from profile_import.core import idempotency
from profile_import.inputs.scan import ContentHash
from profile_import.stores.base import ProfileStore, Version


@dataclass(frozen=True)
class Decided:
    """Each input's content hash and whether this run applies it, by input index."""

    hashes: tuple[ContentHash, ...]
    decisions: tuple[idempotency.InputDecision, ...]

    @property
    def applied(self) -> frozenset[int]:
        return frozenset(d.index for d in self.decisions if d.applies)

    @property
    def fingerprint(self) -> str:
        return idempotency.execution_fingerprint(
            [d.fingerprint for d in self.decisions if d.applies]
        )


class DecideFromLedgerFn(beam.DoFn):
    def __init__(
        self,
        store: ProfileStore | None,
        parent: Version | None,
        semantics: Mapping[str, Any],
        allow_reapply: bool,
        input_count: int,
    ) -> None:
        self._store = store
        self._parent = parent
        self._semantics = dict(semantics)
        self._allow_reapply = allow_reapply
        self._input_count = input_count

    def process(self, hashes: Iterable[ContentHash]) -> Iterator[Decided]:
        ordered = tuple(sorted(hashes))
        assert [h.input_index for h in ordered] == list(range(self._input_count))
        fingerprints = [idempotency.input_fingerprint(h.sha256, self._semantics) for h in ordered]
        ledger = (
            self._store.applied_inputs(self._parent, fingerprints)
            if self._store is not None and self._parent is not None
            else {}
        )
        decisions = idempotency.decide(fingerprints, ledger, allow_reapply=self._allow_reapply)
        yield Decided(ordered, tuple(decisions))


Hashes = beam.pvalue.PCollection[ContentHash]
Decisions = beam.pvalue.PCollection[Decided]


class DecideInputs(beam.PTransform[Hashes, Decisions]):
    """One `Decided` element from the content hashes of every input."""

    def __init__(
        self,
        store: ProfileStore | None,
        parent: Version | None,
        semantics: Mapping[str, Any],
        allow_reapply: bool,
        input_count: int,
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
