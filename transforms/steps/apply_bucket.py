"""Applying one bucket's lines onto its stored profiles, and staging the result.

No Beam here: `transforms.apply_commands` runs `apply_lines` for every bucket the
pipeline groups, and the local engine (`pipelines.in_process`) for every
bucket a worker owns, so both read, fold and write a bucket the same way
(SPEC §2, the rules are `core.bucket`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from profile_import.core.bucket import bucket_changes
from profile_import.core.changes import Change, before_digests
from profile_import.core.commands import commands_by_key
from profile_import.core.fold import Command, Outcome
from profile_import.stores.base import BucketSink, BucketSource

from . import metrics
from .change_files import write_change_file


def apply_lines(
    source: BucketSource,
    sink: BucketSink | None,
    bucket: int,
    lines: Iterable[tuple[bytes, int, bytes | memoryview]],
    now: str,
    changes_dir: str | None = None,
) -> dict[str, int]:
    """Applies a bucket's accepted lines, as (key, kind, line) in input order
    (`batches.in_input_order`), with `apply_bucket`.

    Lines stay raw until their identifier is folded (`commands_by_key`): a
    parsed command takes ~4x the memory of its line, and only one bucket's
    commands are ever in memory this way.
    """
    commands, applied = commands_by_key(lines)
    return apply_bucket(source, sink, bucket, commands, applied, now, changes_dir)


def apply_bucket(
    source: BucketSource,
    sink: BucketSink | None,
    bucket: int,
    commands: Mapping[bytes, Iterable[Command]],
    applied: int,
    now: str,
    changes_dir: str | None = None,
) -> dict[str, int]:
    """Folds `commands` (each key's, in input order) onto the stored bucket and
    writes its new content to `sink` (None: a dry run, nothing written); with
    `changes_dir`, the bucket's changes too, for `run --changes`
    (`change_files`).

    Returns the bucket's results, as data for the final step: the outcome
    counts, `applied` (commands), `buckets_written` (1 or 0) and `profiles`
    (written, or that would be).
    """
    tally: Counter[str] = Counter()
    written = 0
    changes: list[Change] = []
    # Read only the touched profiles, stage only the changes (a database's
    # rows, the folder store's delta segment) and their change records.
    touched = source.read_keys(bucket, sorted(commands))
    changed, deleted = bucket_changes(touched, commands, now, tally, changes)
    if sink is not None:
        sink.write_changes(bucket, changed, deleted, before_digests(changes))
        written = 1
    if changes_dir is not None:
        write_change_file(changes_dir, bucket, changes)
    return _results(applied, tally, written, len(changed))


def _results(applied: int, tally: Counter[str], written: int, profiles: int) -> dict[str, int]:
    return {
        metrics.COMMANDS_APPLIED: applied,
        metrics.PROFILES_CREATED: tally[Outcome.CREATED],
        metrics.PROFILES_UPDATED: tally[Outcome.UPDATED],
        metrics.PROFILES_UNCHANGED: tally[Outcome.UNCHANGED],
        metrics.PROFILES_DELETED: tally[Outcome.DELETED],
        metrics.DELETES_MISSING: tally["deletes_missing"],
        metrics.BUCKETS_WRITTEN: written,
        "profiles": profiles,
    }
