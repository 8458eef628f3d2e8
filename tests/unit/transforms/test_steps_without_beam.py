"""`transforms/steps` and `core` are the import's Beam-free work: importing
every module there, in a fresh interpreter, loads no Beam."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path


def _modules(package: str) -> list[str]:
    """The modules directly in `package` (not its subpackages)."""
    found = importlib.import_module(package).__path__
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(found) if not m.ispkg)


def test_steps_and_core_import_no_beam() -> None:
    modules = _modules("profile_import.transforms.steps") + _modules("profile_import.core")
    assert "profile_import.transforms.steps.finalize" in modules
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_composites_at_the_top_each_need_beam() -> None:
    """Every module at the top of `transforms` holds a Beam composite."""
    modules = _modules("profile_import.transforms")
    assert "profile_import.transforms.import_profiles" in modules
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        source = Path(spec.origin).read_text()
        assert "import apache_beam as beam" in source, module
        assert "beam.PTransform" in source, module
