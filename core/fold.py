"""Applying one identifier's commands, in input order, to its stored profile.

This is the whole of SPEC §2 for one user. The pipeline calls `apply_commands`
once per identifier touched by a run; a plain loop over the same commands must
give the same result (the property tests check it).

Counting is per profile, comparing the state before the run with the state
after it:

| before  | after   | in between             | outcome    | timestamps                          |
|---------|---------|------------------------|------------|-------------------------------------|
| absent  | present |                        | created    | both set to the run's start         |
| present | absent  |                        | deleted    |                                     |
| present | present | content changed        | updated    | last_modified_at moves              |
| present | present | content identical      | unchanged  | both kept                           |
| present | present | deleted, then upserted | updated    | created anew: both set (SPEC §2)    |
| absent  | absent  |                        | absent     | (an upsert then a delete, or none)  |

A DELETE of a profile that does not exist at that point is a no-op counted as
`deletes_missing`.

A DELETE or a replacing UPSERT sets the profile whatever came before it, so
the content of an UPSERT before one is lost: a run that keeps its lines raw
need not parse such an UPSERT, nor any DELETE (`moot`, `STAND_IN`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from .merge import DeepMerger, Profile, same_json, upsert

UPSERT = "UPSERT"
DELETE = "DELETE"


class Command(NamedTuple):
    """One accepted command, reduced to what applying it needs.

    A NamedTuple rather than a dataclass: one is built per line, and a tuple
    is the cheapest object Python can build.
    """

    operation: str
    profile: Profile | None = None
    force_replace: bool = False
    merge_objects: bool = False

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Command:
        """A command from a line object that has already been validated."""
        if obj["operation"] == DELETE:
            return cls(DELETE)
        return cls(
            UPSERT,
            obj["user_profile"],
            obj["force_replace"],
            obj.get("merge_objects", False),
        )


# What a command is to the commands after it, one byte a line, kept beside
# the raw lines of a run that parses them only when it applies them.
DELETES = 0
REPLACES = 1  # an UPSERT with force_replace
MERGES = 2  # an UPSERT without

DELETE_COMMAND = Command(DELETE)
# An UPSERT whose content a later command sets aside (see `moot`); never a
# fold's result, since that later command always replaces it.
STAND_IN = Command(UPSERT, {}, force_replace=True)


def kind_of(operation: str, force_replace: bool | None) -> int:
    """A command's kind (`DELETES`, `REPLACES` or `MERGES`); `force_replace`
    as the line gives it (None: absent, as a DELETE may have it)."""
    if operation == DELETE:
        return DELETES
    return REPLACES if force_replace else MERGES


def moot(kinds: Sequence[int]) -> int:
    """How many of one identifier's commands, from the first, are moot: the
    commands before the last DELETE or replacing UPSERT, which sets the
    profile whatever they did.

    They still count by whether they leave a profile: a DELETE among them
    deletes one or finds none (`deletes_missing`). So each UPSERT among them
    can be applied as `STAND_IN`, without its content, and each DELETE as
    itself: the fold's result, outcome and counts are the same.
    """
    for index in range(len(kinds) - 1, 0, -1):
        if kinds[index] != MERGES:
            return index
    return 0


# Named tuples, not frozen dataclasses: one of each is built per identifier
# a run folds, and a tuple is the cheapest immutable object to build.
class StoredProfile(NamedTuple):
    profile: Profile
    created_at: str
    last_modified_at: str


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    ABSENT = "absent"


class FoldResult(NamedTuple):
    stored: StoredProfile | None
    outcome: Outcome
    deletes_missing: int


def apply_command(current: Profile | None, command: Command) -> Profile | None:
    """The profile after one command (None: no profile)."""
    if command.operation == DELETE:
        return None
    assert command.profile is not None
    return upsert(
        current,
        command.profile,
        force_replace=command.force_replace,
        merge_objects=command.merge_objects,
    )


class ProfileFold:
    """One identifier's commands, applied one at a time as they come."""

    __slots__ = ("current", "deletes_missing", "merger", "recreated", "stored")

    def __init__(self, stored: StoredProfile | None) -> None:
        self.stored = stored
        self.current = stored.profile if stored is not None else None
        self.deletes_missing = 0
        self.recreated = False  # the stored profile was deleted along the way
        self.merger = DeepMerger()

    def apply(self, command: Command) -> None:
        if command.operation == DELETE:
            if self.current is None:
                self.deletes_missing += 1
            else:
                self.recreated = self.stored is not None
        current = self.current
        if current is None or command.profile is None or command.force_replace:
            # The profile is removed or replaced: what the merger built is gone.
            self.merger.forget()
        elif command.merge_objects:
            # Deep merges grow what earlier ones built, in place (see DeepMerger).
            self.current = self.merger.merge(current, command.profile)
            return
        self.current = apply_command(current, command)

    def finish(self, now: str) -> FoldResult:
        """The outcome; `now` is the run's start time."""
        stored, current, missing = self.stored, self.current, self.deletes_missing
        if current is None:
            outcome = Outcome.DELETED if stored is not None else Outcome.ABSENT
            return FoldResult(None, outcome, missing)
        if stored is None:
            return FoldResult(StoredProfile(current, now, now), Outcome.CREATED, missing)
        if self.recreated:
            return FoldResult(StoredProfile(current, now, now), Outcome.UPDATED, missing)
        if same_json(stored.profile, current):
            return FoldResult(stored, Outcome.UNCHANGED, missing)
        return FoldResult(StoredProfile(current, stored.created_at, now), Outcome.UPDATED, missing)


def apply_commands(
    stored: StoredProfile | None, commands: Iterable[Command], now: str
) -> FoldResult:
    """Applies `commands` in order to `stored`; `now` is the run's start time."""
    fold = ProfileFold(stored)
    for command in commands:
        fold.apply(command)
    return fold.finish(now)
