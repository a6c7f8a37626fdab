"""What a fine-tuning run is asked to do, and the token windows it trains and is scored on."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum

import torch

from compress.core.errors import BadInputError


class Optimizer(str, Enum):
    adamw = "adamw"
    sam_adamw = "sam-adamw"
    asam_adamw = "asam-adamw"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on a GPU that supports it, else fp32
    fp32 = "fp32"
    bf16 = "bf16"


@dataclass
class FinetuneConfig:
    model: str  # a folder written by compress prune (or any saved causal-LM folder)
    data: str = "wikipedia"
    output: str = "out/finetuned"
    steps: int = 100
    lr: float = 1e-5
    optimizer: Optimizer = Optimizer.adamw
    rho: float | None = None  # None: 0.05 for SAM, 0.5 for ASAM (it wants ~10x larger)
    eta: float = 0.01
    weight_decay: float = 0.0
    warmup: int = 0
    seqlen: int = 256
    batch: int = 4
    grad_accum: int = 1
    eval_every: int = 50
    eval_windows: int = 16
    save_every: int = 50
    seed: int = 0
    device: str = "auto"
    precision: Precision = Precision.auto
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.optimizer = Optimizer(self.optimizer)
        self.precision = Precision(self.precision)
        if self.rho is None:
            self.rho = 0.5 if self.optimizer is Optimizer.asam_adamw else 0.05
        for name in ("steps", "seqlen", "batch", "grad_accum", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0 or self.rho < 0 or self.eta < 0 or self.warmup < 0:
            raise BadInputError("--lr must be positive and --rho, --eta, --warmup non-negative")
        if self.eval_windows < 0:
            raise BadInputError("--eval-windows must be non-negative (0 turns held-out loss off)")

    @property
    def uses_sam(self) -> bool:
        return self.optimizer is not Optimizer.adamw

    def to_dict(self) -> dict:
        data = asdict(self)
        data["optimizer"] = self.optimizer.value
        data["precision"] = self.precision.value
        return data


def training_windows(tokenizer, config: FinetuneConfig) -> tuple[torch.Tensor, dict]:
    """All the train windows one run needs (or every window the text holds, reused by epoch)."""
    from compress.calibration import load_texts, sample_windows, tokenize_stream

    texts = load_texts(config.data, "train")
    slots = len(tokenize_stream(tokenizer, texts)) // config.seqlen
    per_step = config.batch * config.grad_accum
    if slots < config.batch:
        raise BadInputError(
            f"--data {config.data} holds {slots} train windows of {config.seqlen} tokens, "
            f"fewer than --batch {config.batch}; lower --seqlen/--batch or add text"
        )
    windows = sample_windows(
        tokenizer,
        texts,
        min(slots, config.steps * per_step),
        config.seqlen,
        config.seed,
        config.data,
        "train",
    )
    return windows.ids, windows.describe()


def window_order(available: int, needed: int, seed: int) -> torch.Tensor:
    """Indices of ``needed`` windows: a fresh seeded permutation of all ``available`` per epoch."""
    generator = torch.Generator().manual_seed(seed)
    epochs = math.ceil(needed / available)
    return torch.cat([torch.randperm(available, generator=generator) for _ in range(epochs)])


def heldout_windows(tokenizer, config: FinetuneConfig) -> tuple[torch.Tensor | None, dict | None]:
    if config.eval_windows == 0:
        return None, None
    from compress.calibration import load_windows

    windows = load_windows(
        tokenizer, config.data, config.eval_windows, config.seqlen, config.seed, "test"
    )
    return windows.ids, windows.describe()
