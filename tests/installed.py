"""The package as users install it, built and installed once per test session.

`built`: the sdist and the wheel built from the sdist (`python -m build`, as
a release is made), so a wheel that misses nothing also proves the sdist holds
what rebuilds it. `installed`: that wheel, with every extra, in a virtual
environment of its own, never the source tree: its `profile-import` command is
what a user runs. The environment's third-party packages are kept under
build/installed/, keyed by what the wheel requires, so that later sessions on
one checkout install only the new wheel; a fresh clone (CI) builds it whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = "all"
# Marks an environment whose dependencies installed completely.
COMPLETE = "installed-dependencies"


@dataclass(frozen=True)
class Built:
    sdist: Path
    wheel: Path

    def metadata(self) -> dict[str, list[str]]:
        """The wheel's METADATA headers, each with all its values."""
        with zipfile.ZipFile(self.wheel) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            headers = HeaderParser().parsestr(wheel.read(name).decode())
        values: dict[str, list[str]] = {}
        for key, value in headers.items():
            values.setdefault(key, []).append(value)
        return values


@dataclass(frozen=True)
class Installed:
    venv: Path

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "profile-import"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _run(argv: list[str | Path], cwd: Path) -> None:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    dist = tmp_path_factory.mktemp("dist")
    # Without options, build makes the sdist, then the wheel from the sdist.
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=ROOT)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return Built(sdist, wheel)


@pytest.fixture(scope="session")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    requires = "\n".join([sys.version, *sorted(built.metadata().get("Requires-Dist", []))])
    cache = ROOT / "build" / "installed"
    venv = cache / hashlib.sha256(requires.encode()).hexdigest()[:16]
    for stale in cache.glob("*"):
        if stale != venv:  # the environment of requirements that changed since
            shutil.rmtree(stale, ignore_errors=True)
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip"]
    pip += ["--disable-pip-version-check", "-q"]
    # Run from elsewhere: the checkout must not be importable by accident.
    elsewhere = tmp_path_factory.mktemp("install")
    if (venv / COMPLETE).exists():
        _run([*pip, "uninstall", "-y", "profile-import"], cwd=elsewhere)
        _run([*pip, "install", "--no-deps", built.wheel], cwd=elsewhere)
    else:
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", venv], cwd=elsewhere)
        _run([*pip, "install", f"{built.wheel}[{EXTRAS}]"], cwd=elsewhere)
        (venv / COMPLETE).write_text(requires)
    return Installed(venv)


def installed_env() -> dict[str, str]:
    """This process's environment (the suite's servers) with nothing that
    would make the checkout importable."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
