from __future__ import annotations

import pytest

from profile_import.core.fold import DELETE, Command, Outcome, StoredProfile, apply_commands

NOW = "2026-11-23T00:00:00.000Z"
THEN = "2026-01-01T00:00:00.000Z"
STORED = StoredProfile({"a": 1, "tags": ["x"]}, THEN, THEN)


def up(profile: dict[str, object], force: bool = False, merge: bool = False) -> Command:
    return Command("UPSERT", profile, force, merge)


DEL = Command(DELETE)


@pytest.mark.parametrize(
    ("stored", "commands", "outcome", "profile", "created_at", "modified_at", "missing"),
    [
        (None, [up({"a": 1})], Outcome.CREATED, {"a": 1}, NOW, NOW, 0),
        (None, [DEL], Outcome.ABSENT, None, None, None, 1),
        (None, [up({"a": 1}), DEL], Outcome.ABSENT, None, None, None, 0),
        (None, [DEL, DEL, up({"a": 1})], Outcome.CREATED, {"a": 1}, NOW, NOW, 2),
        (STORED, [DEL], Outcome.DELETED, None, None, None, 0),
        (STORED, [DEL, DEL], Outcome.DELETED, None, None, None, 1),
        (STORED, [up({"b": 2})], Outcome.UPDATED, {"a": 1, "tags": ["x"], "b": 2}, THEN, NOW, 0),
        (STORED, [up({"a": 1})], Outcome.UNCHANGED, {"a": 1, "tags": ["x"]}, THEN, THEN, 0),
        (
            STORED,
            [up({"a": 1, "tags": ["x"]}, force=True)],
            Outcome.UNCHANGED,
            STORED.profile,
            THEN,
            THEN,
            0,
        ),
        (STORED, [up({"a": 2}), up({"a": 1})], Outcome.UNCHANGED, STORED.profile, THEN, THEN, 0),
        (
            STORED,
            [up({"tags": ["y"]}, merge=True)],
            Outcome.UPDATED,
            {"a": 1, "tags": ["x", "y"]},
            THEN,
            NOW,
            0,
        ),
        (STORED, [up({"a": True})], Outcome.UPDATED, {"a": True, "tags": ["x"]}, THEN, NOW, 0),
        # Deleted then created again in the same run: a new profile, created anew.
        (STORED, [DEL, up({"a": 1, "tags": ["x"]})], Outcome.UPDATED, STORED.profile, NOW, NOW, 0),
    ],
)
def test_apply_commands(
    stored: StoredProfile | None,
    commands: list[Command],
    outcome: Outcome,
    profile: dict[str, object] | None,
    created_at: str | None,
    modified_at: str | None,
    missing: int,
) -> None:
    result = apply_commands(stored, commands, NOW)
    assert result.outcome is outcome
    assert result.deletes_missing == missing
    if profile is None:
        assert result.stored is None
    else:
        assert result.stored is not None
        assert result.stored.profile == profile
        assert (result.stored.created_at, result.stored.last_modified_at) == (
            created_at,
            modified_at,
        )


def test_unchanged_keeps_the_stored_object() -> None:
    assert apply_commands(STORED, [up({"a": 1})], NOW).stored is STORED


def test_command_from_object_defaults_merge_objects_to_false() -> None:
    obj = {"operation": "UPSERT", "email_hash": "h", "force_replace": False, "user_profile": {}}
    assert Command.from_object(obj) == Command("UPSERT", {}, False, False)
    assert Command.from_object({"operation": "DELETE", "user_profile": {"x": 1}}) == DEL
