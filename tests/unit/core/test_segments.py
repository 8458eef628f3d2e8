"""A bucket's base and delta segments merge newest-wins, without tombstones (core/segments.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from profile_import.core import segments


def ln(key: str, value: str) -> bytes:
    return f'{key}\t{{"v":"{value}"}}\n'.encode()


def dead(key: str) -> bytes:
    return segments.tombstone(key.encode())


def fold(base: list[bytes], deltas: list[list[bytes]]) -> list[bytes]:
    """The reference: apply each segment in turn onto a dict."""
    state = {segments.key_of(line): line for line in base}
    for delta in deltas:
        for line in delta:
            key = segments.key_of(line)
            if segments.is_tombstone(line):
                state.pop(key, None)
            else:
                state[key] = line
    return [state[k] for k in sorted(state)]


CASES: dict[str, tuple[list[bytes], list[list[bytes]], list[bytes]]] = {
    "no deltas": ([ln("a", "1"), ln("b", "1")], [], [ln("a", "1"), ln("b", "1")]),
    "an update": ([ln("a", "1"), ln("b", "1")], [[ln("b", "2")]], [ln("a", "1"), ln("b", "2")]),
    "a new key before, between and after": (
        [ln("b", "1"), ln("d", "1")],
        [[ln("a", "2"), ln("c", "2"), ln("e", "2")]],
        [ln("a", "2"), ln("b", "1"), ln("c", "2"), ln("d", "1"), ln("e", "2")],
    ),
    "a delete": ([ln("a", "1"), ln("b", "1")], [[dead("a")]], [ln("b", "1")]),
    "a delete of the last key": ([ln("a", "1"), ln("b", "1")], [[dead("b")]], [ln("a", "1")]),
    "a re-create after a delete": (
        [ln("a", "1")],
        [[dead("a")], [ln("a", "3")]],
        [ln("a", "3")],
    ),
    "a delete after a re-create": ([ln("a", "1")], [[ln("a", "2")], [dead("a")]], []),
    "a tombstone for a key absent from the base": (
        [ln("b", "1")],
        [[dead("a"), dead("c")]],
        [ln("b", "1")],
    ),
    "the newest of three wins": (
        [ln("a", "0")],
        [[ln("a", "1"), ln("b", "1")], [ln("a", "2")], [ln("b", "3"), ln("c", "3")]],
        [ln("a", "2"), ln("b", "3"), ln("c", "3")],
    ),
    "an empty base": (
        [],
        [[ln("a", "1")], [ln("b", "2"), dead("z")]],
        [ln("a", "1"), ln("b", "2")],
    ),
    "a key that is a prefix of another": (
        [ln("ab", "1")],
        [[ln("a", "2")], [dead("ab")]],
        [ln("a", "2")],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_merge_is_newest_wins_without_tombstones(case: str) -> None:
    base, deltas, expected = CASES[case]
    assert fold(base, deltas) == expected  # the reference agrees with the case
    assert list(segments.merge_lines(iter(base), [iter(d) for d in deltas])) == expected


@pytest.mark.parametrize("case", CASES)
def test_merge_of_records_drops_empty_records(case: str) -> None:
    """`scan` merges (key, record) pairs: a tombstone's record is empty."""
    base, deltas, expected = CASES[case]

    def pairs(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
        return [(segments.key_of(x), x[len(segments.key_of(x)) + 1 : -1]) for x in lines]

    merged = segments.merge(pairs(base), [pairs(d) for d in deltas])
    assert list(merged) == pairs(expected)


def test_a_delta_is_sorted_with_tombstones_that_are_never_profiles() -> None:
    delta = segments.delta_lines([ln("c", "1"), ln("a", "1")], [b"b", b"d"])
    assert delta == [ln("a", "1"), b"b\t\n", ln("c", "1"), b"d\t\n"]
    assert [segments.is_tombstone(x) for x in delta] == [False, True, False, True]
    assert segments.dead(b"") and segments.dead(b"b\t\n") and not segments.dead(b'{"v":1}')


def test_the_merge_streams() -> None:
    """A bucket is never read whole into memory: the first line comes first."""
    read: list[int] = []

    def base() -> Iterator[bytes]:
        for n in range(1_000_000):
            read.append(n)
            yield ln(f"k{n:07d}", "b")

    merged = segments.merge_lines(base(), [[ln("k0000000", "d")]])
    assert next(merged) == ln("k0000000", "d")
    assert len(read) <= 2
