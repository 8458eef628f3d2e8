"""Versioned schema migrations of the database stores.

Each database store lists its migrations in one module (`sqlite.py`), as
numbered steps of SQL statements. A database records the steps it has in a
`schema_version` table; opening it for a run applies the missing steps in
order, each in the transaction that records it, and a database of a newer
version than this code knows is refused, never written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One numbered step of a store's schema."""

    version: int
    description: str
    statements: tuple[str, ...]


def latest(migrations: tuple[Migration, ...]) -> int:
    return migrations[-1].version if migrations else 0


def pending(migrations: tuple[Migration, ...], current: int) -> list[Migration]:
    """The steps a database at `current` lacks, in order."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations are not numbered 1..N: {numbers}")
    return [m for m in migrations if m.version > current]
