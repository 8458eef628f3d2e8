"""Which inputs a run applies, from their content hashes and the store's ledger.

No Beam here: `transforms.decide_inputs` runs it as the pipeline's
DecideInputs step, and the in-process run calls it directly (SPEC §4, the
rules are `core.idempotency`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from profile_import.core import idempotency
from profile_import.inputs.content import ContentHash
from profile_import.stores.base import ImportTarget, Version


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


def decide(
    hashes: Iterable[ContentHash],
    store: ImportTarget | None,
    parent: Version | None,
    semantics: Mapping[str, Any],
    *,
    allow_reapply: bool,
    input_count: int,
) -> Decided:
    """Every input's decision; `hashes` holds one hash per input, in any order."""
    ordered = tuple(sorted(hashes))
    assert [h.input_index for h in ordered] == list(range(input_count))
    fingerprints = [idempotency.input_fingerprint(h.sha256, semantics) for h in ordered]
    ledger = (
        store.applied_inputs(parent, fingerprints)
        if store is not None and parent is not None
        else {}
    )
    decisions = idempotency.decide(fingerprints, ledger, allow_reapply=allow_reapply)
    return Decided(ordered, tuple(decisions))
