"""The batches that cross the Beam shuffle: framed and read back unchanged."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_import.transforms.steps import batches

# (key, kind, line): keys hold no tab or newline; lines any bytes, empty too.
_LINES = st.lists(
    st.tuples(
        st.binary(max_size=12).filter(lambda k: b"\t" not in k and b"\n" not in k),
        st.integers(0, 2),
        st.binary(max_size=40),
    ),
    max_size=30,
)


def _encoded(
    items: list[tuple[bytes, int, bytes]], first_line: int, spill_dir: str | None
) -> batches.CommandBatch:
    with batches.spilled(spill_dir, 0, first_line) as spill:
        return _encoded_to(spill, items, first_line)


def _encoded_to(
    spill: batches.Spill | None, items: list[tuple[bytes, int, bytes]], first_line: int
) -> batches.CommandBatch:
    keys = [key for key, _, _ in items]
    kinds = bytes(kind for _, kind, _ in items)
    # Lines as check_lines keeps them: views of what was read, or bytes.
    lines = [memoryview(line) if i % 2 else line for i, (_, _, line) in enumerate(items)]
    return batches.encode(0, first_line, keys, kinds, lines, spill)


def _read(batch_list: list[batches.CommandBatch]) -> list[tuple[bytes, int, bytes]]:
    return [
        (key, kind, bytes(line)) for key, kind, line in batches.lines_in_input_order(batch_list)
    ]


@given(_LINES, _LINES)
def test_batches_read_back_their_lines_in_input_order(
    first: list[tuple[bytes, int, bytes]], second: list[tuple[bytes, int, bytes]]
) -> None:
    # Given out of order: the batch of the later range comes first.
    got = _read([_encoded(second, 100, None), _encoded(first, 1, None)])
    assert got == first + second


def test_a_spilled_batch_reads_back_as_the_inline_one(tmp_path: Path) -> None:
    items = [(b"k1", 0, b'{"a": 1}'), (b"k2", 2, b""), (b"k1", 1, b"\xff\x00")]
    inline = _encoded(items, 5, None)
    spilled = _encoded(items, 5, str(tmp_path))
    assert spilled[2] == b"" and Path(spilled[3]).read_bytes() == inline[2]
    assert _read([spilled]) == _read([inline]) == items


@given(st.lists(_LINES, min_size=1, max_size=5))
def test_the_batches_of_one_split_share_its_spill_file(
    buckets: list[list[tuple[bytes, int, bytes]]],
) -> None:
    """Each bucket's frame after the one before, in one file per split; each
    reads back as its own batch, inline or spilled."""
    with tempfile.TemporaryDirectory() as spill_dir:
        with batches.spilled(spill_dir, 0, 40) as spill:
            spilled = [_encoded_to(spill, items, 40) for items in buckets]
        assert os.listdir(spill_dir) == [Path(spilled[0][3]).name]
        for items, batch in zip(buckets, spilled, strict=True):
            assert _read([batch]) == _read([_encoded(items, 40, None)]) == items


def test_a_spill_file_cut_short_fails_in_one_line(tmp_path: Path) -> None:
    items = [(b"k1", 0, b'{"a": 1}'), (b"k2", 1, b'{"b": 2}')]
    spilled = _encoded(items, 1, str(tmp_path))
    Path(spilled[3]).write_bytes(Path(spilled[3]).read_bytes()[:-1])
    damaged = r"^a batch of command lines is damaged: .* ends early$"
    with pytest.raises(batches.DamagedBatch, match=damaged):
        _read([spilled])


def test_a_damaged_batch_fails_in_one_line(tmp_path: Path) -> None:
    items = [(b"k1", 0, b'{"a": 1}'), (b"k2", 1, b'{"b": 2}')]
    frame = _encoded(items, 1, None)[2]
    for damaged in (frame[:-1], frame[:12], frame + b"x"):
        with pytest.raises(batches.DamagedBatch, match=r"^a batch of command lines is damaged"):
            _read([(0, 1, damaged, "", 0, len(damaged))])
