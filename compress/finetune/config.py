"""What a fine-tuning run is asked to do: every ``compress finetune`` option, declared once.

Torch-free, so the command line (and its ``--help``) is built without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import device_option, output_option, overwrite_option, seed_option


class Optimizer(str, Enum):
    adamw = "adamw"
    sam_adamw = "sam-adamw"
    asam_adamw = "asam-adamw"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on a GPU that supports it, else fp32
    fp32 = "fp32"
    bf16 = "bf16"


@dataclass(kw_only=True)
class FinetuneConfig:
    model: str = option(  # a folder written by compress prune (or any saved causal-LM folder)
        argument=True, metavar="MODEL_DIR", help="A model folder written by compress prune."
    )
    data: str = option(
        "wikipedia", help="Text: wikipedia, lambada, boolq, a .txt/.jsonl file or folder."
    )
    steps: int = option(100, help="Optimizer steps.")
    lr: float = option(1e-5, help="Peak learning rate (cosine decay to 0).")
    optimizer: Optimizer = option(
        Optimizer.adamw, help="adamw, or AdamW inside SAM / adaptive SAM (ASAM)."
    )
    rho: float | None = option(  # None: 0.05 for SAM, 0.5 for ASAM (it wants ~10x larger)
        None, help="SAM radius ρ (default 0.05 for SAM, 0.5 for ASAM)."
    )
    eta: float = option(0.01, help="ASAM's η in T = |w| + η.")
    weight_decay: float = option(0.0, help="AdamW weight decay.")
    warmup: int = option(0, help="Linear warmup steps.")
    seqlen: int = option(256, help="Tokens per training window.")
    batch: int = option(4, help="Windows per micro-batch.")
    grad_accum: int = option(1, help="Micro-batches per step (SAM redoes its ascent on each).")
    eval_every: int = option(50, help="Held-out loss every K steps.")
    eval_windows: int = option(16, help="Held-out windows from the test split (0: none).")
    save_every: int = option(50, help="Checkpoint every K steps.")
    seed: int = seed_option("the window sampling and order")
    device: str = device_option()
    precision: Precision = option(
        Precision.auto, help="auto (bf16 autocast on GPU, else fp32), fp32, bf16."
    )
    output: str = output_option("out/finetuned", "Folder for the fine-tuned model", lock=True)
    resume: bool = option(
        False, help="Continue an interrupted run from its checkpoint.", reproduce=False
    )
    overwrite: bool = overwrite_option("an existing OUTPUT")

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
