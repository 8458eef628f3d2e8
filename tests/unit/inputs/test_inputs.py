from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
from dataclasses import replace
from pathlib import Path

import lz4.frame
import pytest
from backports import zstd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from profile_import.inputs import lines as lines_module
from profile_import.inputs.content import ReadError
from profile_import.inputs.lines import InputReadError, read_lines
from profile_import.inputs.plan import (
    InputError,
    InputSplit,
    expand,
    list_inputs,
    refuse_unreadable,
)

from ...helpers import plan

pytestmark = pytest.mark.spec(section=1)


def read_all(
    paths: list[str], split_bytes: int, max_line_bytes: int = 1 << 20
) -> list[tuple[str, int, bytes, int]]:
    _, splits = plan(paths, split_bytes=split_bytes)
    return [
        (split.path, n, content, size)
        for split in splits
        for n, content, size in read_lines(split, max_line_bytes)
    ]


lines_strategy = st.lists(
    st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=30
)


@settings(max_examples=200, deadline=None)
@given(lines_strategy, st.integers(1, 40), st.booleans(), st.booleans())
def test_splits_cover_every_line_once_with_its_number(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    split_bytes: int,
    crlf: bool,
    final_newline: bool,
) -> None:
    path = tmp_path_factory.mktemp("in") / "a.ndjson"
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(lines) + (sep if final_newline and lines else b"")
    path.write_bytes(data)
    try:
        refuse_unreadable(str(path), data[:16])
    except InputError:
        assume(False)  # starts like compressed data (`PK\x03\x04`): refused, tested below
    files, splits = plan([str(path)], split_bytes=split_bytes)
    got = [(n, c) for split in splits for n, c, _ in read_lines(split, 1 << 20)]
    expected_lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected_lines = expected_lines[:-1]
    expected = [
        (i + 1, line[:-1] if line.endswith(b"\r") else line)
        for i, line in enumerate(expected_lines)
    ]
    if expected and expected[0][1].startswith(b"\xef\xbb\xbf"):  # a BOM is not content
        expected[0] = (1, expected[0][1][3:])
    expected = [(n, line if line.strip() else b"") for n, line in expected]  # blank
    assert got == expected
    assert files[0].lines == len(expected)
    assert files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert all(s.start < s.end for s in splits if s.end is not None)


def expected_lines(data: bytes, max_line_bytes: int) -> list[tuple[int, bytes, int]]:
    """What the reader gives for the whole of `data`, as SPEC §1 reads it."""
    pieces = data.split(b"\n")
    ended = [True] * (len(pieces) - 1) + [False]
    if not pieces[-1]:
        pieces, ended = pieces[:-1], ended[:-1]
    expected = []
    for index, (piece, has_end) in enumerate(zip(pieces, ended, strict=True)):
        content = piece[:-1] if has_end and piece.endswith(b"\r") else piece
        if index == 0:
            content = content.removeprefix(b"\xef\xbb\xbf")
        if not content.strip():
            expected.append((index + 1, b"", 0))
        else:
            expected.append((index + 1, content[:max_line_bytes], len(content)))
    return expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"\n", b"\r", b"\r\n", b" ", b"\t", b"{}", b"ab", b"\xef\xbb\xbf", b"x" * 9]
        ),
        max_size=60,
    ),
    st.integers(1, 50),
    st.integers(1, 12),
    st.integers(1, 16),
)
def test_lines_are_read_in_blocks_as_read_whole(
    tmp_path_factory: pytest.TempPathFactory,
    parts: list[bytes],
    split_bytes: int,
    max_line_bytes: int,
    block_bytes: int,
) -> None:
    """Blocks of any size cut lines anywhere (a `\r\n` or a BOM across two
    blocks, a line longer than a block or the limit): every range still
    gives its lines as the whole input read at once would."""
    data = b"".join(parts)
    path = tmp_path_factory.mktemp("in") / "a.ndjson"
    path.write_bytes(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lines_module, "BLOCK_BYTES", block_bytes)
        patch.setattr(lines_module, "_SKIP_CHUNK", max(block_bytes // 3, 1))
        got = read_all([str(path)], split_bytes, max_line_bytes)
    assert [(n, c, size) for _, n, c, size in got] == expected_lines(data, max_line_bytes)


def test_ranges_are_cut_anywhere_and_numbered_by_the_lines_starting_in_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"".join(b"%05d\n" % i for i in range(100)))  # 6 bytes a line
    _, splits = plan([str(path)], split_bytes=20)
    # Lines start at 0, 6, 12, 18, 24...: [20, 40) holds lines 5 to 7 (24, 30, 36).
    assert [(s.start, s.end, s.first_line) for s in splits[:3]] == [
        (0, 20, 1),
        (20, 40, 5),
        (40, 60, 8),
    ]
    assert splits[-1].end == 600
    got = [(n, c) for split in splits for n, c, _ in read_lines(split, 100)]
    assert got == [(i + 1, b"%05d" % i) for i in range(100)]


def test_bom_is_dropped_on_the_first_line_only(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"\xef\xbb\xbf{}\n\xef\xbb\xbf{}\n")
    assert [c for _, _, c, _ in read_all([str(path)], 1 << 20)] == [b"{}", b"\xef\xbb\xbf{}"]


def test_a_range_read_as_if_it_started_its_input_keeps_a_bom(tmp_path: Path) -> None:
    """The local engine's workers number a range's lines once every range is
    checked, reading it from number 1: only the input's first byte starts a
    BOM that is not content."""
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"\xef\xbb\xbf{}\n\xef\xbb\xbf{}\n")
    _, splits = plan([str(path)], split_bytes=6)
    assert [s.start for s in splits] == [0, 6]
    got = [(n, c) for split in splits for n, c, _ in read_lines(replace(split, first_line=1), 100)]
    assert got == [(1, b"{}"), (1, b"\xef\xbb\xbf{}")]


def test_a_bom_does_not_count_against_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + b"x" * 12 + b"\r\n" + b"y" * 12 + b"\n")
    got = [(c, size) for _, _, c, size in read_all([str(path)], 1 << 20, max_line_bytes=12)]
    assert got == [(b"x" * 12, 12), (b"y" * 12, 12)]


@pytest.mark.parametrize("filler", [b" ", b"\t", b" \r"])
def test_white_space_lines_are_blank_whatever_their_length(tmp_path: Path, filler: bytes) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(filler * 100 + b"\n" + b"{}\n" + filler * 7 + b"\r\n" + b" " * 13)
    got = [(n, c, size) for _, n, c, size in read_all([str(path)], 1 << 20, max_line_bytes=12)]
    assert got == [(1, b"", 0), (2, b"{}", 2), (3, b"", 0), (4, b"", 0)]


def test_long_lines_are_cut_and_sized(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"a" * 50 + b"\r\n" + b"b" * 10 + b"\n" + b"c" * 12 + b"\r\n" + b"d" * 13)
    got = [(n, c, size) for _, n, c, size in read_all([str(path)], 1 << 20, max_line_bytes=12)]
    assert got == [(1, b"a" * 12, 50), (2, b"b" * 10, 10), (3, b"c" * 12, 12), (4, b"d" * 12, 13)]


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress),
        (".bz2", bz2.compress),
        (".zst", zstd.compress),
        (".GZ", gzip.compress),
        (".xz", lzma.compress),
        (".lz4", lz4.frame.compress),
    ],
)
def test_compressed_inputs(tmp_path: Path, suffix: str, compress: object) -> None:
    data = b"".join(b'{"n":%d}\n' % i for i in range(1000))
    path = tmp_path / f"a.ndjson{suffix}"
    path.write_bytes(compress(data))  # type: ignore[operator]
    files, splits = plan([str(path)], split_bytes=100)
    assert len(splits) == 1 and splits[0].end is None
    assert files[0].lines == 1000
    # The identity of an input is its content, whatever its compression (SPEC §4).
    assert files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert files[0].size == len(data)
    assert list_inputs([str(path)])[0].size == path.stat().st_size  # as stored
    assert [c for _, _, c, _ in read_all([str(path)], 100)] == data.splitlines()


def test_corrupt_gzip_is_a_read_error_naming_the_input(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n' * 1000)[:-30] + b"garbage")
    list_inputs([str(path)])  # listed without reading its content
    with pytest.raises(ReadError, match=r"a\.ndjson\.gz: cannot be read"):
        plan([str(path)])


def test_a_file_that_breaks_while_read_names_the_input(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n' * 10))
    _, splits = plan([str(path)])
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputReadError, match=r"a\.ndjson\.gz"):
        list(read_lines(splits[0], 100))


def test_expand_keeps_argument_order_and_sorts_globs(tmp_path: Path) -> None:
    for name in ("b.ndjson", "a.ndjson", "c.json", "z.ndjson"):
        (tmp_path / name).write_text("")
    got = expand([str(tmp_path / "z.ndjson"), str(tmp_path / "*.ndjson")])
    assert [Path(p).name for p in got] == ["z.ndjson", "a.ndjson", "b.ndjson", "z.ndjson"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("missing.ndjson", "not found"), ("*.nothing", "matches no file"), (".", "a directory")],
)
def test_expand_errors(tmp_path: Path, pattern: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        expand([str(tmp_path / pattern) if pattern != "." else str(tmp_path)])


def test_empty_file_has_no_split(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"")
    files, splits = plan([str(path)])
    assert files[0].lines == 0 and splits == []


def test_split_sequence() -> None:
    assert InputSplit(3, "p", 10, 20, 7, None).sequence == (3, 7)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.zip", b"PK\x03\x04rest", "zip files are not read"),
        ("a.ndjson.7z", b"7z", "7-Zip files are not read"),
        ("a.ndjson", gzip.compress(b"{}\n"), "gzip-compressed data; rename it to end in .gz"),
        ("a.ndjson", bz2.compress(b"{}\n"), "bzip2-compressed data; rename it to end in .bz2"),
        ("a.json", zstd.compress(b"{}\n"), "zstd-compressed data; rename it to end in .zst"),
        ("a.ndjson", lzma.compress(b"{}\n"), "xz-compressed data; rename it to end in .xz"),
        ("a.txt", lz4.frame.compress(b"{}\n"), "lz4-compressed data; rename it to end in .lz4"),
        ("a.ndjson", b"PK\x03\x04", "zip-compressed data; decompress it first"),
    ],
)
def test_inputs_that_would_be_misread_are_refused(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        plan([str(path)])


def test_plain_text_that_starts_like_bzip2_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_bytes(b"BZh is not enough\n")
    files, _ = plan([str(path)])
    assert files[0].lines == 1


def test_standard_input_is_planned_from_its_spooled_copy(tmp_path: Path) -> None:
    spooled = tmp_path / "stdin.ndjson"
    spooled.write_bytes(b'{"a":1}\n{"a":2}\n')
    [listed] = list_inputs(["-"], sources={"-": str(spooled)})
    assert (listed.path, listed.location) == ("-", str(spooled))
    hashes, splits = plan(["-"], sources={"-": str(spooled)})
    assert hashes[0].lines == 2
    assert [(s.path, s.display_name) for s in splits] == [(str(spooled), "-")]


def test_standard_input_only_once() -> None:
    with pytest.raises(InputError, match="only once"):
        expand(["-", "-"])
