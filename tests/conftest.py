"""Session fixtures shared by the test files: the real servers the suite starts."""

from __future__ import annotations

from .object_servers import gcs_endpoint, object_scheme, s3_endpoint
from .postgres_server import postgres

__all__ = ["gcs_endpoint", "object_scheme", "postgres", "s3_endpoint"]
