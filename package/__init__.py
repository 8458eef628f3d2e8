"""profile-import: batch import of user profile commands (NDJSON) into a profile store.

The subpackages live in the repository's top-level folders (core/, runners/,
...), mapped here by pyproject.toml; this folder is the package itself: its
version, its Python API (`profile_import.api`: `run_import`, `Report`,
`ProfileImportError`, `get_profile`, `export_profiles`), its Beam composite
(`ImportProfiles`, `CommandLine`: `transforms.import_profiles`) and
`python -m profile_import`.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profile_import.transforms.import_profiles import CommandLine, ImportProfiles

    from .api import (
        Counts,
        ProfileImportError,
        Report,
        Status,
        export_profiles,
        get_profile,
        run_import,
    )

__all__ = [
    "CommandLine",
    "Counts",
    "ImportProfiles",
    "ProfileImportError",
    "Report",
    "Status",
    "export_profiles",
    "get_profile",
    "run_import",
]


def __getattr__(name: str) -> Any:
    # The API is imported when first used, so that the command line, which
    # imports this package, does not pay for it.
    if name in ("ImportProfiles", "CommandLine"):
        # The Beam composite: importing it imports Beam.
        from profile_import.transforms import import_profiles

        return getattr(import_profiles, name)
    if name in __all__:
        from . import api

        return getattr(api, name)
    # `__version__`, read from the installed metadata when asked: importing
    # importlib.metadata costs ~30 ms, a tenth of a small import's start.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("profile-import")
        except PackageNotFoundError:  # imported from a source tree that is not installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
