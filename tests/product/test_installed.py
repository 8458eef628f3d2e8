"""What users install works: the wheel and the sdist hold every module and data
file of the source tree, and the command installed from the wheel (never the
source tree) runs the README's main job and the conformance vectors on every
store (tests/installed.py builds and installs it once per session: those tests are slow)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from ..installed import ROOT, Built, Installed, installed_env
from ..spec.test_conformance import CASES, STORES, run_case

MAPPING: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "tool"
]["setuptools"]["package-dir"]


def source_files() -> dict[str, str]:
    """Each file the repository holds under the mapped folders, by the name it
    has once installed (`stores/migrations/sqlite.py` is
    `profile_import/stores/migrations/sqlite.py`)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *MAPPING.values()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    files: dict[str, str] = {}
    for path in filter(None, listed):
        # The deepest mapped folder holding the file names its package.
        name, folder = max(
            ((n, f) for n, f in MAPPING.items() if path.startswith(f"{f}/")),
            key=lambda item: len(item[1]),
        )
        inside = path.removeprefix(f"{folder}/")
        files[f"{name.replace('.', '/')}/{inside}"] = path
    return files


def test_the_source_tree_lists_the_migrations() -> None:
    """The listing the wheel is checked against sees the subpackage a hand-kept
    package list once left out."""
    assert "profile_import/stores/migrations/__init__.py" in source_files()


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
    missing = sorted(set(source_files()) - names)
    assert not missing, f"left out of {built.wheel.name}: {missing}"
    # Nothing but the package and its metadata: no top-level `core` or `tests`.
    assert {n.split("/")[0] for n in names} == {
        "profile_import",
        f"{built.wheel.name.split('-')[0]}-{built.wheel.name.split('-')[1]}.dist-info",
    }
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
def test_the_sdist_holds_what_builds_the_wheel(built: Built) -> None:
    """The wheel above was built from this sdist; it also carries the sources as they are."""
    with tarfile.open(built.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in ("pyproject.toml", "setup.py", "README.md", *source_files().values()):
        assert needed in names, needed


@pytest.mark.slow
def test_the_published_metadata_has_the_user_extras_only(built: Built) -> None:
    metadata = built.metadata()
    assert sorted(metadata["Provides-Extra"]) == ["all", "gcp", "postgresql", "s3"]
    requires = " ".join(metadata["Requires-Dist"])
    for tool in ("pytest", "hypothesis", "moto", "duckdb", "mypy"):
        assert tool not in requires, tool
    with zipfile.ZipFile(built.wheel) as wheel:
        points = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
        assert "profile-import = profile_import.runners.cli:main" in wheel.read(points).decode()


@pytest.mark.slow
def test_the_command_runs_the_installed_package(installed: Installed, tmp_path: Path) -> None:
    found = subprocess.run(
        [installed.python, "-c", "import profile_import.stores.migrations as m; print(m.__file__)"],
        cwd=tmp_path,
        env=installed_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(installed.venv), found
    assert not Path(found).is_relative_to(ROOT / "stores")
    version = subprocess.run(
        [installed.command, "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and re.search(r"\d+\.\d+", version.stdout), version


def quick_start() -> list[str]:
    """The README's Quick start commands, one per line, as a user pastes them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    main_job, tests = quick_start()
    assert ".venv/bin/profile-import run " in main_job
    assert tests.endswith(".venv/bin/python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci, "CI must run the README's test command word for word"


@pytest.mark.slow
def test_the_readme_main_job_through_the_installed_command(
    installed: Installed, tmp_path: Path
) -> None:
    """The Quick start's main job, word for word, in a folder holding the
    repository's examples, with `.venv/bin/` the installed environment's."""
    main_job = quick_start()[0]
    steps = [s.strip() for s in main_job.split("&&")]
    commands = [s for s in steps if s.startswith(".venv/bin/profile-import ")]
    assert commands and steps[-len(commands) :] == commands, main_job
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"\((\d+) lines: (\d+) accepted, (\d+) rejected, (\d+) blank\)", readme)
    assert said, "the README no longer gives the main job's counts"
    lines, accepted, rejected, blank = map(int, said.groups())

    def run_main_job() -> list[subprocess.CompletedProcess[str]]:
        results = []
        for command in commands:
            argv = shlex.split(command.replace(".venv/bin/", f"{installed.venv}/bin/", 1))
            result = subprocess.run(
                argv, cwd=tmp_path, env=installed_env(), capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"{command}: {result.stderr}"
            results.append(result)
        return results

    first = run_main_job()
    report = json.loads((tmp_path / "example-report.json").read_text())
    assert report["status"] == "SUCCEEDED_WITH_ERRORS"
    counts = report["counts"]
    assert (counts["lines"], counts["accepted"], counts["rejected"]) == (lines, accepted, rejected)
    assert counts["blank"] == blank
    assert f"{lines} lines, {accepted} accepted, {rejected} rejected, {blank} blank" in (
        first[0].stderr
    )
    assert len(first[-1].stdout.splitlines()) == 2  # "the two profiles the store now holds"
    assert (tmp_path / "profile-store").is_dir()
    again = run_main_job()
    assert json.loads((tmp_path / "example-report.json").read_text())["status"] == (
        "ALREADY_APPLIED"
    )
    assert again[-1].stdout == first[-1].stdout


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", list(STORES))
@pytest.mark.parametrize("case_path", CASES, ids=[p.stem for p in CASES])
def test_conformance_through_the_installed_command(
    installed: Installed,
    case_path: Path,
    store_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    run_case(case_path, store_kind, tmp_path, request, command=[str(installed.command)])
