"""profile-import: batch import of user profile commands (NDJSON) into a profile store.

The subpackages live in the repository's top-level folders (core/, runners/,
...), mapped here by pyproject.toml; this folder is the package itself: its
version and `python -m profile_import`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("profile-import")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
