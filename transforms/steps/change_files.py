"""A run's changes (`run --changes DEST`, SPEC §6), from its buckets to DEST.

No Beam here: the apply step (`apply_bucket`, in the pipeline or in process)
writes each bucket's changes as a file of the run's work folder, sorted by
key, one `<key>\\t<kind>\\t<export record after, or nothing>` line a change;
the final step (`finalize`), once the run has published (or, in a dry run,
instead of publishing), merges them by key into `DEST` with the version the
run published (`null` in a dry run). A retried bundle rewrites its bucket's
file whole, under the same name.

`DEST` is written whole or not at all (`outputs`); a run that publishes
nothing leaves an existing `DEST` as it is.
"""

from __future__ import annotations

import heapq
import io
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from profile_import.core.changes import KINDS, Change, change_line
from profile_import.stores.files import Files
from profile_import.stores.folders import open_files

from .outputs import Output

_PREFIX = "changes-"
_SUFFIX = ".tsv"
_TAB = b"\t"


class ChangesOutputError(Exception):
    """Changes that do not add up to the report's counts: a bug, never written."""


def change_file_name(bucket: int) -> str:
    return f"{_PREFIX}{bucket:05d}{_SUFFIX}"


def write_change_file(directory: str, bucket: int, changes: Sequence[Change]) -> None:
    """Writes one bucket's changes (in key order) to the run's work folder."""
    if not changes:
        return
    lines = []
    for change in changes:
        record = b"" if change.after is None else change.after[len(change.key) + 1 : -1]
        lines.append(change.key + _TAB + change.kind.encode() + _TAB + record + b"\n")
    files = open_files(directory)
    files.makedirs("")
    files.write_atomic(change_file_name(bucket), b"".join(lines))


def _read(files: Files, name: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    raw = files.open_read(name)
    with raw:
        lines: Iterable[bytes] = io.BufferedReader(raw, 1 << 20) if files.is_local else raw
        for line in lines:
            key, kind, record = line[:-1].split(_TAB, 2)
            yield key, kind, record


def gathered(directory: str) -> Iterator[tuple[bytes, str, bytes | None]]:
    """(key, kind, export record or None) of the run's changes, by key."""
    files = open_files(directory)
    names = sorted(n for n in files.listdir("") if n.startswith(_PREFIX) and n.endswith(_SUFFIX))
    streams = [_read(files, name) for name in names]
    for key, kind, record in heapq.merge(*streams, key=lambda change: change[0]):
        yield key, kind.decode(), record or None


def write_changes(
    changes: Iterable[tuple[bytes, str, bytes | None]],
    location: str,
    version: int | None,
    expected: Mapping[str, int],
) -> int:
    """Writes `changes` (key, kind, record) as NDJSON to `location`, and returns
    how many. `expected`: the count of each kind the run's report gives; a
    difference is never written (a bug, named)."""
    written: Counter[str] = Counter()
    with Output("--changes", location).open() as out:
        for key, kind, record in changes:
            out.write(change_line(kind, version, key, record))
            written[kind] += 1
        wrong = [k for k in KINDS if written[k] != expected.get(k, 0)]
        if wrong:
            raise ChangesOutputError(
                "internal error, the changes do not add up: "
                + "; ".join(
                    f"{written[k]} {k}, the report counts {expected.get(k, 0)}" for k in wrong
                )
            )
    return sum(written.values())
