"""Every name a benchmark script imports from the project exists: a module moved or renamed
breaks the benchmarks, which the suite does not run, at import time."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "evaluators", "exporters", "cards")
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def project_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each ``from module import name`` and (module, None) for ``import``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in PACKAGES:
                found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] in PACKAGES]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_imports_only_what_exists(script: Path):
    missing = []
    for module, name in project_imports(script):
        try:
            imported = importlib.import_module(module)
        except (
            ModuleNotFoundError
        ) as error:  # a dependency this stack lacks is not the script's fault
            if (error.name or "").split(".")[0] in PACKAGES:
                missing.append(module)
            continue
        if name is not None and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports what the project no longer has: {missing}"
