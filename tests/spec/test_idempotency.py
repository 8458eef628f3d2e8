"""Which inputs a run applies: the pure rules of SPEC §4 (core.idempotency)."""

from __future__ import annotations

import pytest

from profile_import.core.idempotency import (
    ALREADY_APPLIED,
    DUPLICATE,
    AppliedInput,
    decide,
    execution_fingerprint,
    input_fingerprint,
)

pytestmark = pytest.mark.spec(section=4)

SEMANTICS = {"default_compartment_id": None, "profile_schema": None, "max_line_bytes": 1 << 20}
LEDGER = {"A": AppliedInput("A", "exec-1", 3, "2026-01-01T00:00:00Z")}


def test_the_fingerprint_is_the_content_and_the_meaning_of_lines() -> None:
    same = input_fingerprint("c" * 64, SEMANTICS)
    assert same == input_fingerprint("c" * 64, dict(reversed(SEMANTICS.items())))
    assert same != input_fingerprint("d" * 64, SEMANTICS)
    assert same != input_fingerprint("c" * 64, {**SEMANTICS, "default_compartment_id": "9"})
    assert same != input_fingerprint("c" * 64, {**SEMANTICS, "max_line_bytes": 10})


@pytest.mark.parametrize(
    ("fingerprints", "allow_reapply", "expected"),
    [
        (["B"], False, [(None, None, None)]),
        (["A"], False, [(ALREADY_APPLIED, "exec-1", None)]),
        (["A", "B"], False, [(ALREADY_APPLIED, "exec-1", None), (None, None, None)]),
        (["B", "B"], False, [(None, None, None), (DUPLICATE, None, 0)]),
        (
            ["B", "A", "B", "A"],
            False,
            [
                (None, None, None),
                (ALREADY_APPLIED, "exec-1", None),
                (DUPLICATE, None, 0),
                (ALREADY_APPLIED, "exec-1", None),
            ],
        ),
        (["A", "B", "B"], True, [(None, None, None)] * 3),
    ],
)
def test_decide(
    fingerprints: list[str],
    allow_reapply: bool,
    expected: list[tuple[str | None, str | None, int | None]],
) -> None:
    decisions = decide(fingerprints, LEDGER, allow_reapply=allow_reapply)
    got = [
        (d.skipped, d.applied_by.execution_id if d.applied_by else None, d.duplicate_of)
        for d in decisions
    ]
    assert got == expected
    assert [d.index for d in decisions] == list(range(len(fingerprints)))
    assert [d.applies for d in decisions] == [e[0] is None for e in expected]


def test_execution_fingerprint_follows_the_applied_inputs_in_order() -> None:
    assert execution_fingerprint(["A", "B"]) == execution_fingerprint(["A", "B"])
    assert execution_fingerprint(["A", "B"]) != execution_fingerprint(["B", "A"])
    assert execution_fingerprint(["A"]) != execution_fingerprint(["A", "A"])
