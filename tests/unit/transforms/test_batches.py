"""The batches that cross the Beam shuffle: framed and read back unchanged."""

from __future__ import annotations

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
    keys = [key for key, _, _ in items]
    kinds = bytes(kind for _, kind, _ in items)
    # Lines as check_lines keeps them: views of what was read, or bytes.
    lines = [memoryview(line) if i % 2 else line for i, (_, _, line) in enumerate(items)]
    return batches.encode(7, 0, first_line, keys, kinds, lines, spill_dir)


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


def test_a_damaged_batch_fails_in_one_line(tmp_path: Path) -> None:
    items = [(b"k1", 0, b'{"a": 1}'), (b"k2", 1, b'{"b": 2}')]
    _, _, frame, _ = _encoded(items, 1, None)
    for damaged in (frame[:-1], frame[:12], frame + b"x"):
        with pytest.raises(batches.DamagedBatch, match=r"^a batch of command lines is damaged"):
            _read([(0, 1, damaged, "")])
