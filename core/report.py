"""The run report (SPEC §4): counts, status and the upload-API summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from .codes import RejectCode


class Status(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    SUCCEEDED_WITH_ERRORS = "SUCCEEDED_WITH_ERRORS"
    FAILED = "FAILED"
    ALREADY_APPLIED = "ALREADY_APPLIED"


COUNT_NAMES = (
    "lines",
    "blank",
    "accepted",
    "rejected",
    "upserts",
    "deletes",
    "profiles_created",
    "profiles_updated",
    "profiles_unchanged",
    "profiles_deleted",
    "deletes_missing",
)


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_NAMES, 0)


def count_problems(counts: Mapping[str, int], rejects_by_code: Mapping[str, int]) -> list[str]:
    """Every way the counts fail to add up (SPEC §4); empty when they do."""
    problems = []
    if counts["lines"] != counts["blank"] + counts["accepted"] + counts["rejected"]:
        problems.append("lines != blank + accepted + rejected")
    if counts["accepted"] != counts["upserts"] + counts["deletes"]:
        problems.append("accepted != upserts + deletes")
    if counts["rejected"] != sum(rejects_by_code.values()):
        problems.append("rejected != sum of rejects by code")
    return problems


def reject_limit_problem(
    counts: Mapping[str, int], max_rejects: int | None, max_reject_ratio: float | None
) -> str | None:
    """Why the run is over its reject limit, or None.

    The ratio is rejected / non-blank lines: blank lines are neither good nor bad.
    """
    rejected = counts["rejected"]
    if max_rejects is not None and rejected > max_rejects:
        return f"{rejected} rejected lines exceed --max-rejects {max_rejects}"
    considered = counts["lines"] - counts["blank"]
    if max_reject_ratio is not None and considered and rejected / considered > max_reject_ratio:
        return (
            f"reject ratio {rejected / considered:.4f} ({rejected}/{considered}) "
            f"exceeds --max-reject-ratio {max_reject_ratio}"
        )
    return None


def status_of(counts: Mapping[str, int], failure: str | None) -> Status:
    if failure is not None:
        return Status.FAILED
    return Status.SUCCEEDED_WITH_ERRORS if counts["rejected"] else Status.SUCCEEDED


PROFILE_COUNTS = (
    "profiles_created",
    "profiles_updated",
    "profiles_unchanged",
    "profiles_deleted",
    "deletes_missing",
)


def published_counts(status: Status, counts: Mapping[str, int]) -> dict[str, int]:
    """The counts a report shows: a failed run changed no profile, so its
    profile counts are 0, while what it read and checked is kept."""
    shown = {name: counts[name] for name in COUNT_NAMES}
    if status is Status.FAILED:
        shown.update(dict.fromkeys(PROFILE_COUNTS, 0))
    return shown


def summary_message(
    status: Status,
    counts: Mapping[str, int],
    *,
    failure: str | None = None,
    version: int | None = None,
    dry_run: bool = False,
    note: str | None = None,
) -> str:
    """The one-line human summary, also the report's `message`."""
    c = counts
    read = (
        f"{c['lines']:,} lines, {c['accepted']:,} accepted, "
        f"{c['rejected']:,} rejected, {c['blank']:,} blank"
    )
    if status is Status.FAILED:
        # Nothing was published: say what was read, never profile changes.
        text = f"{status}: {failure or 'the run failed'}; {read}; nothing was published, "
        text += "the store is unchanged"
        return f"{text}; {note}" if note else text
    text = (
        f"{status}: {read}; profiles "
        f"{c['profiles_created']:,} created, {c['profiles_updated']:,} updated, "
        f"{c['profiles_unchanged']:,} unchanged, {c['profiles_deleted']:,} deleted"
    )
    if dry_run:
        text += "; dry run: the store is unchanged"
    elif version is not None:
        text += f"; published as store version {version}"
    return f"{text}; {note}" if note else text


def build(
    *,
    execution_id: str,
    status: Status,
    counts: Mapping[str, int],
    rejects_by_code: Mapping[str, int],
    inputs: Sequence[Mapping[str, Any]],
    started_at: str,
    finished_at: str,
    runner: str,
    store: str,
    message: str,
    first_errors: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    ordered_codes = {
        str(code): rejects_by_code[code] for code in RejectCode if code in rejects_by_code
    }
    return {
        "execution_id": execution_id,
        "status": str(status),
        "store": store,
        "inputs": list(inputs),
        "counts": published_counts(status, counts),
        "rejects_by_code": ordered_codes,
        "started_at": started_at,
        "finished_at": finished_at,
        "runner": runner,
        **extra,
        "errors": status is Status.FAILED or counts["rejected"] > 0,
        "message": message,
        "data": list(first_errors),
    }
