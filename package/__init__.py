"""profile-import: batch import of user profile commands (NDJSON) into a profile store.

The subpackages live in the repository's top-level folders (core/, runners/,
...), mapped here by pyproject.toml; this folder is the package itself: its
version and `python -m profile_import`.
"""


def __getattr__(name: str) -> str:
    # `__version__`, read from the installed metadata when asked: importing
    # importlib.metadata costs ~30 ms, a tenth of a small import's start.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("profile-import")
        except PackageNotFoundError:  # imported from a source tree that is not installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
