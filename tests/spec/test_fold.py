from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_import.core.commands import commands_by_key, load_accepted, load_commands
from profile_import.core.fold import (
    DELETE,
    DELETES,
    MERGES,
    REPLACES,
    STAND_IN,
    Command,
    Outcome,
    StoredProfile,
    apply_commands,
    kind_of,
    moot,
)

pytestmark = pytest.mark.spec(section=2)

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


D, R, M = DELETES, REPLACES, MERGES


@pytest.mark.parametrize(
    ("kinds", "moot_count"),
    [
        ([], 0),
        ([M], 0),
        ([R], 0),
        ([D], 0),
        ([M, M, M], 0),
        ([M, R], 1),
        ([M, D], 1),
        ([M, M, D, M], 2),
        ([R, M, R, M, M], 2),
        ([D, M, D], 2),
        ([R, D, M], 1),
        ([M, R, M, D, M, M], 3),
    ],
)
def test_moot_counts_the_commands_before_the_last_delete_or_replace(
    kinds: list[int], moot_count: int
) -> None:
    assert moot(kinds) == moot_count


@pytest.mark.parametrize(
    ("operation", "force_replace", "kind"),
    [("DELETE", False, D), ("DELETE", True, D), ("UPSERT", True, R), ("UPSERT", False, M)],
)
def test_kind_of(operation: str, force_replace: bool, kind: int) -> None:
    assert kind_of(operation, force_replace) == kind


def _line(command: Command) -> bytes:
    obj: dict[str, object] = {"operation": command.operation, "email_hash": "h"}
    if command.operation != DELETE:
        obj |= {"force_replace": command.force_replace, "user_profile": command.profile}
        obj["merge_objects"] = command.merge_objects
    return orjson.dumps(obj)


def test_load_commands_parses_only_what_counts() -> None:
    commands = [up({"a": 1}), DEL, up({"b": 2}, merge=True), up({"c": 3}, force=True), up({"d": 4})]
    lines = [_line(c) for c in commands]
    kinds = [kind_of(c.operation, c.force_replace) for c in commands]
    assert list(load_commands(kinds, lines)) == [STAND_IN, DEL, STAND_IN, *commands[3:]]
    assert [load_accepted(line) for line in lines] == commands


def test_commands_by_key_keeps_each_identifiers_lines_in_order() -> None:
    a1, b1, a2, a3 = up({"a": 1}), up({"b": 1}), DEL, up({"a": 3}, merge=True)
    lines = [(b"a", a1), (b"b", b1), (b"a", a2), (b"a", a3)]
    commands, count = commands_by_key(
        (key, kind_of(c.operation, c.force_replace), _line(c)) for key, c in lines
    )
    assert count == 4
    assert {key: list(found) for key, found in commands.items()} == {
        b"a": [STAND_IN, DEL, a3],
        b"b": [b1],
    }


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["x", "y"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=4,
)
_profiles = st.dictionaries(st.sampled_from("abc"), _values, max_size=3)
_commands = st.one_of(
    st.just(DEL),
    st.builds(up, _profiles, st.booleans(), st.booleans()),
)
_stored = st.none() | st.builds(StoredProfile, _profiles, st.just(THEN), st.just(THEN))


@given(_stored, st.lists(_commands, max_size=8))
def test_folding_without_the_moot_lines_gives_the_same_result(
    stored: StoredProfile | None, commands: list[Command]
) -> None:
    """Every line parsed and applied, or only those whose content counts:
    the same profile, outcome, timestamps and counts."""
    lines = [_line(c) for c in commands]
    kinds = [kind_of(c.operation, c.force_replace) for c in commands]
    assert apply_commands(stored, load_commands(kinds, lines), NOW) == apply_commands(
        stored, commands, NOW
    )
