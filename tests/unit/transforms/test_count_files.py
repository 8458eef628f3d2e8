"""Each split's counts as a file of the run's work folder, summed per input:
what a FAILED report of a pipeline that crashed counts."""

from __future__ import annotations

from pathlib import Path

from profile_import.transforms.steps.count_files import (
    count_file_name,
    read_count_files,
    write_count_file,
)

from ...object_servers import new_bucket


def split_counts(lines: int, rejected: int = 0) -> dict[str, int]:
    accepted = lines - rejected
    counts = {"lines": lines, "blank": 0, "accepted": accepted, "rejected": rejected}
    counts |= {"upserts": accepted, "deletes": 0}
    return counts | ({"rejected.INVALID_JSON": rejected} if rejected else {})


def check_summing(work: str) -> None:
    assert read_count_files(work) == {}  # no folder yet: nothing finished
    write_count_file(work, (0, 1), split_counts(10, rejected=2))
    write_count_file(work, (0, 11), split_counts(5))
    write_count_file(work, (1, 1), split_counts(7, rejected=1))
    # A retried bundle writes its split's file again: counted once.
    write_count_file(work, (0, 11), split_counts(5))
    assert read_count_files(work) == {
        0: split_counts(15, rejected=2),
        1: split_counts(7, rejected=1),
    }


def test_splits_are_summed_per_input_and_a_retry_counts_once(tmp_path: Path) -> None:
    work = tmp_path / "work" / "counts"
    check_summing(str(work))
    # Whole or not at all: a temporary file of a write under way counts nothing.
    (work / f"{count_file_name((2, 1))}.1234.tmp").write_bytes(b'{"lines": 3')
    (work / count_file_name((3, 1))).write_bytes(b'{"lines": 3')  # damaged: skipped
    assert sorted(read_count_files(str(work))) == [0, 1]


def test_a_work_folder_in_a_bucket(object_scheme: str) -> None:
    """Where the workers of a remote runner write: the same files, as objects."""
    check_summing(f"{object_scheme}://{new_bucket(object_scheme)}/staging/run/counts")
