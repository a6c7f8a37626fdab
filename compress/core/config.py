"""The configuration tree of a pruning run, saved as recipe.json.

Each default lives once, in its field; ``__post_init__`` validates values at the boundary so a
bad flag fails before any model is loaded.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.patterns import SparsityPattern


class Method(str, Enum):
    magnitude = "magnitude"
    wanda = "wanda"
    sparsegpt = "sparsegpt"


class MagnitudeScope(str, Enum):
    """Where magnitude scores compete: one threshold per layer (the papers' baseline) or per row."""

    layer = "layer"
    row = "row"


class Technique(str, Enum):
    """Reconstruction: none (mask only), lr (the pruner's own layer update), br (block-wise),
    gp (targets from the dense model's stream), cr (windows of two blocks)."""

    none = "none"
    lr = "lr"
    br = "br"
    br_gp = "br+gp"
    br_gp_cr = "br+gp+cr"
    br_cr = "br+cr"

    @property
    def trains(self) -> bool:
        return self.value.startswith("br")

    @property
    def global_targets(self) -> bool:
        return "gp" in self.value

    @property
    def cross_block(self) -> bool:
        return self.value.endswith("cr")


class ReconOptimizer(str, Enum):
    """The optimizer of block reconstruction: Adam, or SAM around Adam."""

    adam = "adam"
    sam = "sam"


@dataclass
class ReconstructConfig:
    technique: Technique = Technique.br_gp  # beat lr on the embedded model (issue 3 note)
    epochs: int = 10
    lr: float = 2e-4
    optimizer: ReconOptimizer = ReconOptimizer.adam
    rho: float = 2e-4
    early_stop: bool = False
    holdout: str | None = None  # None: the test split of the calibration source
    holdout_nsamples: int = 16
    measure_errors: bool | None = None  # None: on when the technique trains
    activations_dtype: str = "auto"  # auto (the model's) | float32 | bfloat16 | float16
    activations_device: str = (
        "auto"  # auto (accelerator if they fit, else pinned CPU) | accelerator | cpu
    )

    def __post_init__(self) -> None:
        self.technique = Technique(self.technique)
        try:
            self.optimizer = ReconOptimizer(self.optimizer)
        except ValueError:
            raise BadInputError(
                f"--recon-optimizer {self.optimizer!r}: choose adam or sam"
            ) from None
        if self.epochs < 0 or self.lr <= 0 or self.holdout_nsamples < 1:
            raise BadInputError(
                "--recon-epochs must be >= 0, --recon-lr > 0 and --holdout-nsamples >= 1"
            )
        if self.activations_device not in ("auto", "accelerator", "cpu"):
            raise BadInputError(
                f"--activations-device {self.activations_device!r}: choose auto, accelerator or cpu"
            )
        if self.activations_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise BadInputError(
                f"--activations-dtype {self.activations_dtype!r}: choose auto, float32, bfloat16 or float16"
            )

    @property
    def errors(self) -> bool:
        return self.technique.trains if self.measure_errors is None else self.measure_errors


class StatsFrom(str, Enum):
    """Which calibration windows feed the pruners' statistics (the paper: real text only)."""

    real = "real"
    all = "all"


@dataclass
class CalibrationConfig:
    source: str = "wikipedia"  # "none": self-generated text only (needs self_gen)
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 8
    self_gen: str | None = None  # N texts to generate now, or a .jsonl from `calib generate`
    stats_from: StatsFrom = StatsFrom.real

    def __post_init__(self) -> None:
        self.stats_from = StatsFrom(self.stats_from)
        if (
            self.self_gen is not None
            and not (self.self_gen.isdigit() and int(self.self_gen) > 0)
            and not Path(self.self_gen).is_file()
        ):
            raise BadInputError(
                f"--self-gen {self.self_gen!r}: give a number of texts or an existing .jsonl from compress calib generate"
            )
        if self.source == "none" and self.self_gen is None:
            raise BadInputError(
                "--calib none needs --self-gen N|FILE: there would be no calibration text"
            )
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
    magnitude_scope: MagnitudeScope | None = None  # None: layer for magnitude, unused otherwise
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None  # accelerate: auto | balanced | sequential | JSON
    max_memory: str | None = None  # "0=20GiB,cpu=64GiB"
    offload_folder: str | None = None
    distributed: bool = False  # data-parallel calibration under torchrun / accelerate launch
    output: str = "out/pruned"
    overwrite: bool = False
    resume: bool = False
    push_to_hub: bool = False
    hub_repo_id: str | None = None  # None: the output folder's name
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.method = Method(self.method)
        if self.method is Method.magnitude:
            self.magnitude_scope = MagnitudeScope(self.magnitude_scope or MagnitudeScope.layer)
        elif self.magnitude_scope is not None:
            raise BadInputError("--magnitude-scope applies to --method magnitude only")
        if self.push_to_hub and not self.hub_repo_id:
            self.hub_repo_id = Path(self.output).name
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

    def pruner_options(self) -> dict:
        """Keyword arguments for the pruner class beyond the weight and its name."""
        return {"scope": self.magnitude_scope.value} if self.magnitude_scope else {}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["method"] = self.method.value
        data["magnitude_scope"] = self.magnitude_scope and self.magnitude_scope.value
        data["reconstruct"]["technique"] = self.reconstruct.technique.value
        data["reconstruct"]["optimizer"] = self.reconstruct.optimizer.value
        data["calibration"]["stats_from"] = self.calibration.stats_from.value
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
