"""Concept datasets by name: synthetic, led7digit, zoo, cub, and the user's own table (CSV).

A :class:`DataSpec` is what a trained model folder records, so every later command rebuilds the
very same splits (the generators and splits are seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.core.errors import BadInputError
from evaluators.cbm.config import DataName
from evaluators.cbm.data.base import ConceptDataset, ConceptSplit, class_majority
from evaluators.cbm.data.cub import load_cub
from evaluators.cbm.data.led7digit import load_led7digit
from evaluators.cbm.data.synthetic import SyntheticConfig, generate_synthetic
from evaluators.cbm.data.table import load_table
from evaluators.cbm.data.zoo import load_zoo


def _synthetic(path: Path | None, seed: int, options: dict[str, Any]) -> ConceptDataset:
    return generate_synthetic(SyntheticConfig(seed=seed, **options))


# keyed by the str-Enum members, so a plain name looks a loader up too
LOADERS: dict[str, Callable[[Path | None, int, dict[str, Any]], ConceptDataset]] = {
    DataName.synthetic: _synthetic,
    DataName.led7digit: lambda path, seed, options: load_led7digit(path, seed, **options),
    DataName.zoo: lambda path, seed, options: load_zoo(path, seed, **options),
    DataName.cub: lambda path, seed, options: load_cub(path, seed, **options),
    DataName.table: lambda path, seed, options: load_table(path, seed, **options),
}


@dataclass
class DataSpec:
    """Which dataset, where from (None = packaged/generated), its seed and loader options."""

    name: str = "synthetic"
    path: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in LOADERS:
            raise BadInputError(
                f"dataset {self.name!r} is unknown: choose one of {', '.join(n.value for n in DataName)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recorded(spec: DataSpec) -> DataSpec:
    """``spec`` with every synthetic knob written out, so a saved model keeps its data even if a
    default changes; other datasets are returned unchanged."""
    if spec.name != "synthetic":
        return spec
    knobs = {k: v for k, v in asdict(SyntheticConfig()).items() if k != "seed"}
    return DataSpec(spec.name, spec.path, spec.seed, {**knobs, **spec.options})


def load_dataset(spec: DataSpec) -> ConceptDataset:
    """Build the dataset a spec names; loader options that do not exist are a one-line error."""
    path = Path(spec.path) if spec.path else None
    try:
        return LOADERS[spec.name](path, spec.seed, dict(spec.options))
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise BadInputError(f"dataset {spec.name}: {exc.args[0].split('() ')[-1]}") from exc


__all__ = [
    "LOADERS",
    "ConceptDataset",
    "ConceptSplit",
    "DataSpec",
    "SyntheticConfig",
    "class_majority",
    "generate_synthetic",
    "load_dataset",
    "recorded",
]
