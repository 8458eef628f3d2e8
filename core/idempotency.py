"""Which inputs a run applies (SPEC §4: idempotency is per input).

An input is identified by its content, decompressed, plus the run options
that change what a line means: its fingerprint is a sha256 of both. Names,
compression and the other inputs of the run do not count, so:

- an input whose fingerprint the store's ledger holds is skipped, and the
  report names the execution that applied it;
- a content given twice in one run is applied once (the first time);
- `--allow-reapply` applies every input as given, duplicates included;
- a run whose inputs are all skipped is `ALREADY_APPLIED`.

A nightly glob re-run after a late file arrives thus applies only the late
file, and a deep merge is never applied twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALREADY_APPLIED = "already_applied"
DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class AppliedInput:
    """A ledger entry: an input fingerprint and the execution that applied it."""

    fingerprint: str
    execution_id: str
    version: int
    finished_at: str


@dataclass(frozen=True, slots=True)
class InputDecision:
    """Whether one input of a run is applied, and if not, why."""

    index: int
    fingerprint: str
    skipped: str | None = None  # ALREADY_APPLIED, DUPLICATE or None (applied)
    applied_by: AppliedInput | None = None
    duplicate_of: int | None = None

    @property
    def applies(self) -> bool:
        return self.skipped is None


def input_fingerprint(content_sha256: str, semantics: Mapping[str, Any]) -> str:
    """The identity of one input: its content and what the options make a line mean."""
    doc = {"content_sha256": content_sha256, **semantics}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def execution_fingerprint(fingerprints: Sequence[str]) -> str:
    """The identity of what a run applies: its applied inputs, in order."""
    return hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()


def decide(
    fingerprints: Sequence[str],
    ledger: Mapping[str, AppliedInput],
    *,
    allow_reapply: bool = False,
) -> list[InputDecision]:
    """One decision per input, in input order.

    `ledger` holds the entries of the store's version for (at least) these
    fingerprints.
    """
    decisions: list[InputDecision] = []
    first_seen: dict[str, int] = {}
    for index, fingerprint in enumerate(fingerprints):
        if allow_reapply:
            decisions.append(InputDecision(index, fingerprint))
            continue
        applied = ledger.get(fingerprint)
        if applied is not None:
            decisions.append(InputDecision(index, fingerprint, ALREADY_APPLIED, applied))
        elif fingerprint in first_seen:
            decisions.append(
                InputDecision(index, fingerprint, DUPLICATE, duplicate_of=first_seen[fingerprint])
            )
        else:
            first_seen[fingerprint] = index
            decisions.append(InputDecision(index, fingerprint))
    return decisions
