"""Session fixtures shared by the test files: the real servers the suite starts, and
the package as users install it."""

from __future__ import annotations

from .installed import built, installed
from .object_servers import gcs_endpoint, object_scheme, s3_endpoint
from .postgres_server import postgres, postgres_tcp

__all__ = [
    "built",
    "gcs_endpoint",
    "installed",
    "object_scheme",
    "postgres",
    "postgres_tcp",
    "s3_endpoint",
]
