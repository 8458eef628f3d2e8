"""Session fixtures shared by test modules."""

from .object_servers import gcs_endpoint, object_scheme, s3_endpoint

__all__ = ["gcs_endpoint", "object_scheme", "s3_endpoint"]
