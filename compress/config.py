"""The configuration tree of a pruning run, saved as recipe.json.

Each default lives once, in its field; ``__post_init__`` validates values at the boundary so a
bad flag fails before any model is loaded.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from enum import Enum

from compress.errors import BadInputError
from compress.masks import SparsityPattern


class Method(str, Enum):
    magnitude = "magnitude"
    wanda = "wanda"
    sparsegpt = "sparsegpt"


@dataclass
class CalibrationConfig:
    source: str = "wikipedia"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("nsamples", "seqlen", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class EvalConfig:
    enabled: bool = False
    dataset: str = "wikipedia"
    seqlen: int | None = None  # None: the calibration seqlen
    max_windows: int | None = 40  # None: the whole test split


@dataclass
class PruneConfig:
    model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    method: Method = Method.wanda
    sparsity: float = 0.5
    pattern: str = "unstructured"
    skip: list[str] = field(default_factory=list)  # fnmatch patterns of layers left dense
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # fnmatch pattern -> sparsity
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    dtype: str = "auto"
    output: str = "out/pruned"
    overwrite: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.method = Method(self.method)
        self.parsed_pattern = SparsityPattern.parse(self.pattern)
        self.pattern = str(self.parsed_pattern)
        if self.parsed_pattern.structured:
            self.sparsity = self.parsed_pattern.sparsity
        for where, value in [("--sparsity", self.sparsity), *self.layer_sparsity.items()]:
            if not 0.0 <= value < 1.0:
                raise BadInputError(f"sparsity for {where} is {value}; it must lie in [0, 1)")

    def sparsity_for(self, layer: str) -> float:
        """The target sparsity of ``layer``: the last matching override, else ``sparsity``."""
        target = self.sparsity
        for pattern, value in self.layer_sparsity.items():
            if fnmatch.fnmatchcase(layer, pattern):
                target = value
        return target

    def to_dict(self) -> dict:
        data = asdict(self)
        data["method"] = self.method.value
        return data


def parse_layer_sparsity(items: list[str]) -> dict[str, float]:
    """``["*.down_proj=0.3", ...]`` -> ``{"*.down_proj": 0.3}``."""
    result: dict[str, float] = {}
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            result[pattern] = float(value)
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise BadInputError(
                f"--layer-sparsity {item!r}: write PATTERN=SPARSITY, e.g. '*.down_proj=0.3'"
            )
    return result
