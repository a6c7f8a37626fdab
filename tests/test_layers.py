"""The packages import each other in one direction only (ARCHITECTURE.md, "Layers").

A layer is a set of folders: every module belongs to the layer of the folder it sits in, and may
import modules of its own layer or of layers below it. Imports inside functions count too: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "evaluators", "exporters", "cards")

# (layer, folders relative to the repository root), lowest first
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("compress/core",)),
    ("algorithms", ("compress/algorithms",)),
    ("model", ("compress/model",)),
    ("data", ("compress/data",)),
    ("runs", ("compress/engine", "compress/finetune")),
    ("stages", ("evaluators", "exporters", "cards")),
    ("app", ("compress/app", "compress/cli")),
]
# besides __init__.py, which holds only the version string
MAX_TOP_LEVEL_MODULES = 3


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name: that of the deepest layer folder holding it."""
    if module == "compress":
        return 0
    path = module.replace(".", "/")
    best, best_len = None, -1
    for rank, (_, folders) in enumerate(LAYERS):
        for folder in folders:
            if (path == folder or path.startswith(folder + "/")) and len(folder) > best_len:
                best, best_len = rank, len(folder)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(filter(None, [*base, node.module or ""]))
            else:
                target = node.module or ""
            names.add(target)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def project_modules() -> list[tuple[Path, str]]:
    return sorted(
        (path, module_name(path)) for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py")
    )


def test_every_module_has_a_layer():
    unplaced = [module for _, module in project_modules() if layer_of(module) is None]
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("path,module", project_modules(), ids=lambda v: str(v))
def test_no_upward_import(path: Path, module: str):
    own = layer_of(module)
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]})"
        for name in sorted(imported(path, module))
        if layer_of(name) is not None and own is not None and layer_of(name) > own
    ]
    assert not upward, f"{module} ({LAYERS[own][0]}) imports upward: {upward}"


def test_every_folder_of_compress_is_a_layer():
    folders = {
        f"compress/{p.name}" for p in (ROOT / "compress").iterdir() if (p / "__init__.py").exists()
    }
    placed = {folder for _, fs in LAYERS for folder in fs}
    assert folders - placed == set(), "give these folders a layer in tests/test_layers.py"
    assert placed - {f for f in placed if (ROOT / f).is_dir()} == set(), (
        "layer folders that do not exist"
    )


def test_few_modules_sit_directly_under_compress():
    flat = sorted(p.name for p in (ROOT / "compress").glob("*.py") if p.name != "__init__.py")
    assert len(flat) <= MAX_TOP_LEVEL_MODULES, f"put these modules in a layer's folder: {flat}"


def test_architecture_names_only_what_exists():
    """Every path ARCHITECTURE.md writes in backticks (a folder or a .py file) is in the tree."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(
        re.findall(r"`((?:compress|exporters|evaluators|cards|tests|benchmarks)/[\w/.]*)`", text)
    )
    assert named, "ARCHITECTURE.md names no paths; the pattern above no longer matches it"
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


def test_architecture_names_no_module_that_is_gone():
    """A bare module or folder name in backticks (`masks.py`, `pruners/`) is somewhere in the tree."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    bare = set(re.findall(r"`(\w+\.py|\w+/)`", text))
    present = {p.name for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    present |= {p.name + "/" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.is_dir()}
    present |= {pkg + "/" for pkg in PACKAGES}
    missing = sorted(bare - present)
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"
