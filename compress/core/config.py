"""The configuration tree of a pruning run, saved as recipe.json.

Each default lives once, in its field; ``__post_init__`` validates values at the boundary so a
bad flag fails before any model is loaded.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar

from compress.core.errors import BadInputError
from compress.core.methods import METHODS, methods_help
from compress.core.options import choice, flag_of, option, options_of, value_at
from compress.core.patterns import SparsityPattern
from compress.core.quantization import QUANTIZATION, QuantizeConfig
from compress.core.shared_options import (
    DType,
    device_option,
    dtype_option,
    generation_rows_option,
    output_option,
    overwrite_option,
    seed_option,
)

# The panels of `compress prune --help`, in the order it lists them (PruneConfig.PANELS).
PRUNING, PROFILE, CALIBRATION = "Pruning", "Sparsity profile", "Calibration"
RECONSTRUCTION, EVALUATION = "Reconstruction", "Evaluation"
PLACEMENT, OUTPUT = "Placement", "Output and Hub"

QUANTIZED_HELP = (
    "Refused: pruning needs the dense weights (quantize the result with compress export bnb)."
)


# --method's choices: the methods of compress/core/methods.py, in their order
Method = Enum("Method", [(name, name) for name in METHODS], type=str)

# One sub-config per method, named after it, holding that method's options (recipe.json:
# "pruner": {"magnitude": {"scope": "layer"}, "sparsegpt": {...}, ...}).
PrunerOptions = make_dataclass(
    "PrunerOptions",
    [(name, cls, field(default_factory=cls)) for name, cls in METHODS.items()],
    kw_only=True,
    namespace={"PANEL": PRUNING, "__doc__": "Each method's options (compress/core/methods.py)."},
)


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
    adam = "adam"
    sam = "sam"  # sharpness-aware, around Adam


class ReconSchedule(str, Enum):
    """How the learning rate moves over a block's steps (from --recon-lr, no warm-up).

    linear is the default (the paper's): constant closes more of the calibration error but
    hardly more of the held-out error, so what it adds is mostly fit to the calibration set
    (docs/results.md). No warm-up: Adam's first steps are already bounded by the rate, and a
    few-step budget cannot spare any.
    """

    linear = "linear"  # down to 0 (the paper's)
    cosine = "cosine"  # half a cosine down to 0
    constant = "constant"


class SparsityProfile(str, Enum):
    """How the target spreads over blocks: the same everywhere, OWL, or the allocation that
    minimises the summed block errors of a first pass (compress/algorithms/sparsity_profile.py)."""

    uniform = "uniform"
    owl = "owl"
    errors = "errors"


class ActivationsDevice(str, Enum):
    auto = "auto"
    accelerator = "accelerator"
    cpu = "cpu"


PAPER_LR, PAPER_STEPS = 2e-4, 320  # Shin et al.: lr 2e-4 over 256 samples x 10 epochs / batch 8
MAX_AUTO_LR = 3e-3  # above it the short budgets diverge (learning_rate)


@dataclass(kw_only=True)
class ReconstructConfig:
    PANEL: ClassVar[str] = RECONSTRUCTION

    technique: Technique = option(
        Technique.br_gp,  # closes part of lr's gap to the dense model (docs/results.md)
        flags="--reconstruct",
        metavar="TECHNIQUE",
        help="none (mask only), lr (the pruner's layer update), br (block-wise), br+gp (dense-model targets), br+gp+cr / br+cr (two-block windows).",
    )
    epochs: int = option(
        10, flags="--recon-epochs", help="Reconstruction epochs over the calibration set."
    )
    steps: int | None = option(
        None,  # None: --recon-epochs decide
        flags="--recon-steps",
        help="Optimizer steps per block (per window) instead of --recon-epochs: the budget in batches, the lr schedule spanning them.",
    )
    lr: float | None = option(
        None,  # None: scaled to the budget, see learning_rate
        flags="--recon-lr",
        help="Adam learning rate; default: 2e-4 x 320 / steps per block within [2e-4, 3e-3] (the paper's rate at its 320 steps, larger for fewer steps so weights can move as far).",
    )
    schedule: ReconSchedule = option(
        ReconSchedule.linear,
        flags="--recon-schedule",
        metavar="SCHEDULE",
        help="Learning-rate schedule over a block's steps: linear (to 0), cosine (to 0), constant.",
    )
    optimizer: ReconOptimizer = option(
        ReconOptimizer.adam,
        flags="--recon-optimizer",
        metavar="OPTIMIZER",
        help="adam, or sam (sharpness-aware, around Adam).",
    )
    rho: float = option(2e-4, flags="--recon-rho", help="SAM radius rho for --recon-optimizer sam.")
    early_stop: bool = option(
        False,
        flags="--recon-early-stop",
        help="Stop a block's reconstruction when its held-out error rises; keep the best weights.",
    )
    holdout: str | None = option(
        None,
        flags="--holdout",
        help="Held-out text for errors and early stopping (its validation split, disjoint from the evaluated test split); default: the calibration source.",
    )
    holdout_nsamples: int = option(
        16, flags="--holdout-nsamples", help="Held-out sequences (fewer if the split is short)."
    )
    measure_errors: bool | None = option(
        None,
        flags="--errors",
        help="Measure per-block normalized error vs the dense model; default: on for br*.",
    )
    activations_dtype: DType = option(
        DType.auto,
        flags="--activations-dtype",
        metavar="DTYPE",
        help="Storage dtype of activations: auto (the model's), float32, bfloat16, float16.",
        panel=PLACEMENT,
    )
    activations_device: ActivationsDevice = option(
        ActivationsDevice.auto,
        flags="--activations-device",
        metavar="DEVICE",
        help="Where activation streams live: auto (the accelerator if they fit in half its free memory, else pinned CPU memory streamed per batch), accelerator, cpu.",
        panel=PLACEMENT,
    )

    def __post_init__(self) -> None:
        self.technique = Technique(self.technique)
        self.optimizer = choice(ReconOptimizer, self.optimizer, "--recon-optimizer")
        self.schedule = choice(ReconSchedule, self.schedule, "--recon-schedule")
        self.activations_dtype = choice(DType, self.activations_dtype, "--activations-dtype")
        self.activations_device = choice(
            ActivationsDevice, self.activations_device, "--activations-device"
        )
        if self.steps is not None and self.steps < 1:
            raise BadInputError(f"--recon-steps must be at least 1, got {self.steps}")
        if self.epochs < 0 or (self.lr is not None and self.lr <= 0) or self.holdout_nsamples < 1:
            raise BadInputError(
                "--recon-epochs must be >= 0, --recon-lr > 0 and --holdout-nsamples >= 1"
            )

    @property
    def errors(self) -> bool:
        return self.technique.trains if self.measure_errors is None else self.measure_errors

    def learning_rate(self, steps: int) -> float:
        """``--recon-lr``, or the default for a budget of ``steps`` per block: the paper's
        2e-4 at its 320 steps (256 samples x 10 epochs / batch 8), scaled by 320 / steps so a
        smaller budget keeps its product (how far Adam can move each weight), at most 3e-3.

        Why: at the 4-64 steps CPU calibration affords, the paper's 2e-4 barely moves the
        weights; larger rates close more of a block's held-out error up to 3e-3, while 1e-2
        diverges (the rates tried: docs/results.md).
        """
        if self.lr is not None:
            return self.lr
        return min(max(PAPER_LR * PAPER_STEPS / steps, PAPER_LR), MAX_AUTO_LR)


class StatsFrom(str, Enum):
    """Which calibration windows feed the pruners' statistics (the paper: real text only)."""

    real = "real"
    all = "all"


@dataclass(kw_only=True)
class CalibrationConfig:
    PANEL: ClassVar[str] = CALIBRATION

    source: str = option(
        "wikipedia",  # "none": self-generated text only (needs self_gen)
        flags="--calib",
        help="Calibration text: wikipedia, lambada, boolq (offline), wikitext2, c4 (Hub), or a .txt/.jsonl file or folder.",
    )
    nsamples: int = option(128, flags="--nsamples", help="Number N of calibration sequences.")
    seqlen: int = option(
        2048, flags="--seqlen", help="Length T of each calibration sequence, in tokens."
    )
    batch_size: int = option(
        8,
        flags=("--batch-size", "--recon-batch"),
        help="Sequences per forward pass and per reconstruction step.",
    )
    seed: int = seed_option("choosing calibration windows")
    self_gen: str | None = option(
        None,
        flags="--self-gen",
        help="Add self-generated calibration text (the paper's recipe): N windows of --seqlen tokens, one from each of N texts the model writes now that reach that length (all kept in the output as selfgen.jsonl), or a .jsonl from `compress calib generate`. With --calib none, the only source.",
    )
    self_gen_batch: int = generation_rows_option(
        "--self-gen-batch", "Texts --self-gen N writes (apart from --batch-size)"
    )
    stats_from: StatsFrom = option(
        StatsFrom.real,
        flags="--stats-from",
        metavar="WINDOWS",
        help="Pruner statistics (Wanda ‖X‖, SparseGPT H) from real windows only (the paper) or from all windows.",
    )

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
        for name in ("nsamples", "seqlen", "batch_size", "self_gen_batch"):
            if getattr(self, name) < 1:
                flag = flag_of(type(self), name)
                raise BadInputError(f"{flag} must be at least 1, got {getattr(self, name)}")


class SaveFormat(str, Enum):
    """How the pruned weights are saved (exporters/compressed.py for the compressed one)."""

    dense = "dense"
    compressed = "compressed"


def _zero_is_none(value: int | None) -> int | None:
    return value or None


def check_window_count(flag: str, value: int | None) -> None:
    """Refuse a negative perplexity window count, which would otherwise reach a reshape.

    Raises:
        BadInputError: ``value`` is below 0.
    """
    if value is not None and value < 0:
        raise BadInputError(f"{flag} must be 0 or more (0: all windows), got {value}")


@dataclass(kw_only=True)
class EvalConfig:
    PANEL: ClassVar[str] = EVALUATION

    enabled: bool = option(
        False, flags="--eval", help="Measure perplexity before and after pruning."
    )
    dataset: str = option(
        "wikipedia",
        flags="--eval-dataset",
        help="Text --eval measures (same names as --calib): its test split for packaged sources, a file of your own whole unless it also calibrates.",
    )
    seqlen: int | None = option(
        None, flags="--eval-seqlen", help="Window length for --eval; default: --seqlen."
    )
    max_windows: int | None = option(
        40,  # None: the whole test split
        flags="--eval-windows",
        help="At most this many windows for --eval (0: all).",
        cli_type=int,
        to_cli=lambda value: value or 0,
        from_cli=_zero_is_none,
    )

    def __post_init__(self) -> None:
        check_window_count("--eval-windows", self.max_windows)


def _pairs_to_cli(overrides: dict[str, float]) -> list[str] | None:
    return [f"{pattern}={value}" for pattern, value in overrides.items()] or None


def _list_from_cli(items: list[str] | None) -> list[str]:
    return list(items or [])


@dataclass(kw_only=True)
class PruneConfig:
    PANELS: ClassVar[tuple[str, ...]] = (
        PRUNING,
        PROFILE,
        CALIBRATION,
        RECONSTRUCTION,
        QUANTIZATION,
        EVALUATION,
        PLACEMENT,
        OUTPUT,
    )
    # recipe.json keys of earlier versions -> where their value lives now (None: not set)
    RENAMED: ClassVar[dict[str, tuple[str, ...]]] = {
        "magnitude_scope": ("pruner", "magnitude", "scope")
    }

    model: str | None = option(
        None,  # None: the embedded SmolLM2-135M-Instruct
        argument=True,
        help="Hub id, local folder or .gguf file; omitted: the embedded SmolLM2-135M-Instruct.",
    )
    method: Method = option(
        Method.wanda,
        flags="--method",
        metavar="METHOD",
        help=methods_help(),
        panel=PRUNING,
    )
    sparsity: float = option(
        0.5,
        flags="--sparsity",
        help="Target sparsity s in [0, 1): share of zeros per layer (ignored for N:M).",
        panel=PRUNING,
    )
    pattern: str = option(
        "unstructured",
        flags="--pattern",
        help="'unstructured' or N:M such as 2:4 or 4:8 (keep N of every M weights).",
        panel=PRUNING,
    )
    pruner: PrunerOptions = field(default_factory=PrunerOptions)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    output: str | None = output_option(
        None,  # None: out/<model-name>-<method>-<sparsity or NofM>[-<reconstruction>]
        "Output folder (default: out/<model>-<method>-<sparsity or NofM>[-<reconstruction>])",
        panel=OUTPUT,
    )
    overwrite: bool = overwrite_option(panel=OUTPUT)
    save_format: SaveFormat = option(
        SaveFormat.dense,
        flags="--save-format",
        metavar="FORMAT",
        help="dense (safetensors holding the zeros) or compressed (legacy sparse compressed-tensors, read by compressed-tensors <= 0.14, vLLM <= 0.19.0, transformers <= 5.9; needs the legacy-sparse extra).",
        panel=OUTPUT,
    )
    device: str = device_option(PLACEMENT)
    dtype: DType = dtype_option(PLACEMENT)
    skip: list[str] = option(
        default_factory=list,
        flags="--skip",
        metavar="GLOB",
        help="Glob of layer names to leave dense, e.g. '*.mlp.down_proj' (repeatable). LM head and embeddings are never pruned.",
        panel=PROFILE,
        cli_type=list[str] | None,
        to_cli=lambda items: items or None,
        from_cli=_list_from_cli,
    )
    layer_sparsity: dict[str, float] = option(
        default_factory=dict,
        flags="--layer-sparsity",
        metavar="PATTERN=S",
        help="Per-layer override PATTERN=S, e.g. '*.down_proj=0.3' (repeatable; last match wins).",
        panel=PROFILE,
        cli_type=list[str] | None,
        to_cli=_pairs_to_cli,
        from_cli=lambda items: parse_layer_sparsity(items or []),
    )
    sparsity_profile: SparsityProfile = option(
        SparsityProfile.uniform,
        flags="--sparsity-profile",
        metavar="PROFILE",
        help="uniform, owl (fewer zeros in blocks with more outliers) or errors (least summed block error); owl and errors: a first pass, blocks within ±--owl-lambda, mean --sparsity.",
        panel=PROFILE,
    )
    owl_m: float = option(
        5.0,
        flags="--owl-m",
        help="OWL: a score |W|·‖X‖ is an outlier above M × the block's mean.",
        panel=PROFILE,
    )
    owl_lambda: float = option(
        0.08,
        flags="--owl-lambda",
        help="owl / errors: block sparsities lie within --sparsity ± lambda.",
        panel=PROFILE,
    )
    one_pass: bool = option(
        False,
        flags="--one-pass",
        help="One forward per block, later layers calibrated on the pruned earlier ones (GPTQ's true-sequential), where nothing is trained or measured and the calibration fits one batch.",
        panel=PRUNING,
    )
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    resume: bool = option(
        False,
        flags="--resume",
        reproduce=False,
        help="Continue an interrupted run of the same settings from its last finished block.",
        panel=OUTPUT,
    )
    checkpoint_every: float = option(
        30.0,
        flags="--checkpoint-every",
        reproduce=False,
        help="Seconds between checkpoints of the finished blocks, where --resume starts (0: after every block); the last block and blocks offloaded by --device-map are checkpointed as they finish.",
        panel=OUTPUT,
    )
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device_map: str | None = option(
        None,
        flags="--device-map",
        help="Spread the model with accelerate: auto, balanced, sequential or a JSON map; blocks waiting on CPU/disk are onloaded to --device for their turn.",
        panel=PLACEMENT,
    )
    max_memory: str | None = option(
        None,
        flags="--max-memory",
        help="Memory budget per device for --device-map, e.g. '0=20GiB,1=20GiB,cpu=64GiB'.",
        panel=PLACEMENT,
    )
    offload_folder: str | None = option(
        None,
        flags="--offload-folder",
        help="Folder for weights offloaded to disk by --device-map.",
        panel=PLACEMENT,
    )
    distributed: bool = option(
        False,
        flags="--distributed",
        help="Data-parallel calibration across the processes of torchrun / accelerate launch (rank 0 writes).",
        panel=PLACEMENT,
    )
    load_in_8bit: bool = option(False, flags="--load-in-8bit", help=QUANTIZED_HELP, panel=PLACEMENT)
    load_in_4bit: bool = option(False, flags="--load-in-4bit", help=QUANTIZED_HELP, panel=PLACEMENT)
    push_to_hub: bool = option(
        False,
        flags="--push-to-hub",
        reproduce=False,
        help="Upload the output folder (model, card, report) to the Hugging Face Hub when done.",
        panel=OUTPUT,
    )
    hub_repo_id: str | None = option(
        None,  # None: the output folder's name
        flags="--hub-repo-id",
        reproduce=False,
        help="Hub repository for --push-to-hub (default: the output folder's name under your account).",
        panel=OUTPUT,
    )
    trust_remote_code: bool = option(
        False,
        flags="--trust-remote-code",
        help="Allow model code from the Hub repository to run.",
        panel=PLACEMENT,
    )

    def __post_init__(self) -> None:
        self.method = Method(self.method)
        self.dtype = choice(DType, self.dtype, "--dtype")
        self.save_format = choice(SaveFormat, self.save_format, "--save-format")
        self._check_pruner_options()
        self.parsed_pattern = SparsityPattern.parse(self.pattern)
        self.pattern = str(self.parsed_pattern)
        if self.parsed_pattern.structured:
            self.sparsity = self.parsed_pattern.sparsity
        self._check_profile()
        self.output = str(self.output or Path("out") / self.default_name())
        if self.push_to_hub and not self.hub_repo_id:
            self.hub_repo_id = Path(self.output).name
        if not self.checkpoint_every >= 0:
            raise BadInputError(
                f"--checkpoint-every is {self.checkpoint_every}; give seconds >= 0 (0: every block)"
            )
        if self.method.value == "none":
            self._check_quantize_only()
        for where, value in [("--sparsity", self.sparsity), *self.layer_sparsity.items()]:
            if not 0.0 <= value < 1.0:
                raise BadInputError(f"sparsity for {where} is {value}; it must lie in [0, 1)")

    def _check_quantize_only(self) -> None:
        """``--method none`` keeps the weights' zeros and rounds them: nothing to prune, train
        or profile, so it needs ``--quantize`` and refuses what would have nothing to act on."""
        if not self.quantize.enabled:
            raise BadInputError("--method none prunes nothing: add --quantize int4 or int8")
        if self.reconstruct.technique.trains:
            raise BadInputError(
                f"--method none keeps the weights as they are; --reconstruct "
                f"{self.reconstruct.technique.value} would train them: use --reconstruct lr"
            )
        if (
            self.parsed_pattern.structured
            or self.layer_sparsity
            or self.sparsity_profile is not SparsityProfile.uniform
        ):
            raise BadInputError(
                "--method none prunes nothing: drop --pattern, --layer-sparsity and "
                "--sparsity-profile"
            )
        self.sparsity = 0.0  # the zeros already there are kept; none are added

    def _check_pruner_options(self) -> None:
        """Refuse an option of a method other than ``--method``'s set to other than its default
        (it would change nothing)."""
        for f in fields(self.pruner):
            if f.name == self.method.value:
                continue
            values, defaults = getattr(self.pruner, f.name), METHODS[f.name]()
            set_ = [
                opt.flag
                for opt in options_of(METHODS[f.name])
                if getattr(values, opt.path[-1]) != getattr(defaults, opt.path[-1])
            ]
            if set_:
                raise BadInputError(f"{', '.join(set_)} applies to --method {f.name} only")

    def _check_profile(self) -> None:
        self.sparsity_profile = choice(SparsityProfile, self.sparsity_profile, "--sparsity-profile")
        if self.sparsity_profile is SparsityProfile.uniform:
            return
        flag = f"--sparsity-profile {self.sparsity_profile.value}"
        if self.parsed_pattern.structured:
            raise BadInputError(f"{flag} needs unstructured sparsity: N:M fixes every ratio")
        if self.layer_sparsity:
            raise BadInputError(f"{flag} sets every layer's sparsity: drop --layer-sparsity")
        if self.owl_m <= 0 or not 0 <= self.owl_lambda or self.sparsity + self.owl_lambda >= 1:
            raise BadInputError(
                "--owl-m must be > 0, --owl-lambda >= 0 and --sparsity + lambda < 1"
            )

    def default_name(self) -> str:
        """``<model-name>-<method>-<sparsity % or NofM>[-<reconstruction>]``, in the characters
        a Hub repository name allows, e.g. ``Llama-2-7b-wanda-50-br-gp``."""
        model = Path(self.model).stem if self.model and self.model.endswith(".gguf") else None
        model = model or Path(self.model or "SmolLM2-135M-Instruct").name
        amount = f"{round(self.sparsity * 100)}"
        if self.parsed_pattern.structured:
            amount = self.pattern.replace(":", "of")
        if self.method.value == "none":  # quantize only
            return f"{model}-{self.quantize.label()}"
        parts = [model, self.method.value, amount]
        if self.sparsity_profile is not SparsityProfile.uniform:
            parts.append(self.sparsity_profile.value)
        if self.reconstruct.technique is not Technique.none:
            parts.append(self.reconstruct.technique.value.replace("+", "-"))
        if self.quantize.enabled:
            parts.append(self.quantize.label())
        return "-".join(parts)

    def sparsity_for(self, layer: str) -> float:
        """The target sparsity of ``layer``: the last matching override, else ``sparsity``."""
        target = self.sparsity
        for pattern, value in self.layer_sparsity.items():
            if fnmatch.fnmatchcase(layer, pattern):
                target = value
        return target

    @staticmethod
    def applies(config: PruneConfig | dict, path: tuple[str, ...]) -> bool:
        """Whether the option at ``path`` applies to ``config`` (an object or its record): not
        the options of a method other than its ``--method`` (:func:`to_argv` leaves them out)."""
        if path[0] != "pruner":
            return True
        method = value_at(config, ("method",))
        return path[1] == getattr(method, "value", method)

    def pruner_options(self) -> object:
        """The options object of ``--method``'s pruner (its constructor's ``options``)."""
        return getattr(self.pruner, self.method.value)

    def to_dict(self) -> dict:
        """The recipe (recipe.json): every field, enums as their values."""
        return asdict(self, dict_factory=_plain)


def _plain(items: list[tuple[str, object]]) -> dict:
    return {key: value.value if isinstance(value, Enum) else value for key, value in items}


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
