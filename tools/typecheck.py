"""Runs mypy (strict) on the package as it is installed: `profile_import.<folder>`.

pyproject maps the top-level folders (core/, transforms/, ...) to subpackages
of `profile_import`; mypy reads folders, not that mapping, and does not crawl
symlinked folders. So this copies the installed layout to build/typecheck/,
checks it with the tests, the benchmark and the tools, and reports every
error at its real path. Usage: python tools/typecheck.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    view = ROOT / "build" / "typecheck"
    shutil.rmtree(view, ignore_errors=True)
    real_paths: dict[str, str] = {}
    for name, folder in mapping.items():
        copy = view / name.replace(".", "/")
        shutil.copytree(
            ROOT / folder, copy, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
        )
        real_paths[f"{copy.relative_to(ROOT)}/"] = f"{folder}/"
    env = dict(os.environ, MYPYPATH=str(view))
    # A package checks its subpackages too: name only the outermost ones.
    outermost = [n for n in mapping if not any(n.startswith(f"{p}.") for p in mapping)]
    packages = [arg for name in outermost for arg in ("-p", name)]
    status = 0
    # mypy takes either packages or files in one call.
    for targets in (packages, ["tests", "bench", "tools", "examples"]):
        result = subprocess.run(
            [sys.executable, "-m", "mypy", *targets],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        output = result.stdout + result.stderr
        # The deepest copies first: profile_import/core/ is core/, not package/core/.
        for copied in sorted(real_paths, key=len, reverse=True):
            output = output.replace(copied, real_paths[copied])
        print(output, end="")
        status = status or result.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
