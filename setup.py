"""What the wheel holds, found rather than listed: every package (a folder with
an `__init__.py`) and every other file under the folders that pyproject maps to
`profile_import.*`, so a new subpackage or data file is never left out.

Everything else (metadata, the mapping itself) is in pyproject.toml.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _shipped(path: Path) -> bool:
    """Whether a file under a mapped folder is part of the package: not bytecode,
    a cache or a hidden file an editor or a tool left there."""
    return not any(part.startswith(".") or part == "__pycache__" for part in path.parts) and (
        path.suffix not in (".pyc", ".pyo")
    )


def discover(mapping: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """The packages under each mapped folder, and each package's other files
    (those of its subfolders that are not packages included)."""
    folders: dict[str, Path] = {}
    for name, folder in mapping.items():
        top = ROOT / folder
        for init in top.rglob("__init__.py"):
            if _shipped(init.relative_to(ROOT)):
                folders[".".join([name, *init.parent.relative_to(top).parts])] = init.parent
    by_folder = {path: name for name, path in folders.items()}
    data: dict[str, list[str]] = {}
    for name, folder in folders.items():
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or not _shipped(path.relative_to(ROOT)):
                continue
            # A file belongs to the nearest package above it.
            owner = next(p for p in path.parents if p in by_folder)
            if owner != folder or (path.suffix == ".py" and path.parent == folder):
                continue
            data.setdefault(name, []).append(path.relative_to(folder).as_posix())
    return sorted(folders), data


def main() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages, package_data = discover(config["tool"]["setuptools"]["package-dir"])
    setup(packages=packages, package_data=package_data)


main()
