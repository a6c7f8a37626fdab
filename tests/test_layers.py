"""The packages import each other in one direction only (ARCHITECTURE.md, DESIGN.md "Layers").

Every module of the project is assigned a layer by its dotted name (longest prefix wins); a module
may import modules of its own layer or of layers below it. Imports inside functions count too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "evaluators", "exporters", "cards")

# (layer, module prefixes), lowest first
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("compress.core",)),
    (
        "algorithms",
        (
            "compress.masks",
            "compress.pruners",
            "compress.reconstruct",
            "compress.sam",
            "compress.distributed",
            "compress.sparsity_profile",
            "compress.finite",
        ),
    ),
    (
        "model plumbing",
        (
            "compress.models",
            "compress.cast_load",
            "compress.compat",
            "compress.blocks",
            "compress.moe",
            "compress.placement",
            "compress.calibration",
            "compress.token_cache",
            "compress.wikitext",
            "compress.selfgen",
            "compress.engine",
            "compress.finetune",
            "compress.convert_meta",
            "compress.hub_source",
            "compress.plan",
            "compress.preflight",
        ),
    ),
    ("stages", ("evaluators", "exporters", "cards")),
    ("app", ("compress.app", "compress.cli")),
]


def layer_of(module: str) -> int | None:
    if module == "compress":  # the package itself: only its version string
        return 0
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
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
