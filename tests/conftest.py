"""Fixtures shared by the test files."""

from __future__ import annotations

from .postgres_server import postgres  # noqa: F401 - a fixture, found by name
