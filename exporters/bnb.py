"""bitsandbytes weights for a pruned model folder: NF4 (4-bit NormalFloat) or LLM.int8().

Quantization comes after pruning: pruning needs the dense weights (the prune command refuses
8-/4-bit loading), while a pruned folder saved for transformers loads with a
``BitsAndBytesConfig`` and saves again as a bitsandbytes checkpoint. Both codes keep exact zeros
(NF4 has a 0 level; int8 absmax scaling maps 0 to 0), so the pruned sparsity survives; it is
measured on the dequantized weights, beside the perplexity of the quantized model.
Dettmers et al., QLoRA (arXiv 2305.14314) for NF4; LLM.int8() (arXiv 2208.07339).
"""

from __future__ import annotations

import shutil
from dataclasses import MISSING, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.config import check_window_count
from compress.core.errors import BadInputError
from compress.core.io import check_target
from compress.core.options import option
from compress.core.report import (
    RECIPE_NAME,
    REPORT_NAME,
    ArtifactRecord,
    artifact_record,
    perplexity_label,
    perplexity_section,
    read_report,
    record_artifact,
    same_protocol,
)
from compress.core.shared_options import device_option, output_option, overwrite_option
from exporters.base import FOLDER_HELP, Exporter, register, run_export

if TYPE_CHECKING:  # torch is imported where it runs, so the scheme names load without it
    import torch
    from torch import nn


class BnbScheme(str, Enum):
    nf4 = "bnb-nf4"
    int8 = "bnb-int8"


SCHEMES = {
    BnbScheme.nf4.value: "bitsandbytes 4-bit NormalFloat weights, double-quantized, blocks of 64",
    BnbScheme.int8.value: "bitsandbytes LLM.int8(): int8 weights per output row, outlier "
    "threshold 6.0",
}


def quantization_config(scheme: str, compute_dtype: torch.dtype):
    """The ``BitsAndBytesConfig`` of ``scheme`` (see :data:`SCHEMES`)."""
    from transformers import BitsAndBytesConfig

    if scheme == BnbScheme.nf4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if scheme == BnbScheme.int8:
        return BitsAndBytesConfig(load_in_8bit=True)
    raise BadInputError(f"--quantize {scheme!r} is not known: choose {', '.join(SCHEMES)}")


def load_quantized(folder: Path, scheme: str, device: torch.device) -> nn.Module:
    """``folder`` loaded through bitsandbytes on ``device`` (bf16 compute on GPU, fp32 on CPU).

    Raises:
        BadInputError: unknown scheme, or bitsandbytes is not installed.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = quantization_config(scheme, dtype)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise BadInputError(
            f"--quantize {scheme} needs bitsandbytes: pip install 'compress[bnb]'"
        ) from exc
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=config, device_map={"": device}, dtype=dtype
    )
    return model.eval()


def dequantized(module: nn.Module) -> torch.Tensor | None:
    """The float weight a bitsandbytes Linear computes with, or None for other modules."""
    import bitsandbytes as bnb

    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
    if isinstance(module, bnb.nn.Linear8bitLt):  # row scales move to ``state`` after a forward
        scb = module.weight.SCB if module.weight.SCB is not None else module.state.SCB
        return module.weight.data.float() * scb.unsqueeze(1) / 127.0
    return None


def quantized_sparsity(model: nn.Module) -> dict:
    """Share of exact zeros in the dequantized weights of the quantized Linears."""
    from compress.algorithms.masks import zero_count

    zeros = numel = layers = 0
    for module in model.modules():
        weight = dequantized(module)
        if weight is not None:
            zeros += zero_count(weight)
            numel += weight.numel()
            layers += 1
    return {"layers": layers, "sparsity": zeros / numel if numel else 0.0}


def baseline_perplexity(report: dict, dataset: str, seqlen: int, windows: int | None):
    """The pruned model's perplexity already in its report, when measured the same way."""
    recorded = (report.get("evaluation") or {}).get("perplexity") or {}
    return recorded.get("after") if same_protocol(recorded, dataset, seqlen, windows) else None


@dataclass(frozen=True)
class ExportBnbConfig:
    """``compress export bnb``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    output: Path = output_option(MISSING, "Folder for the quantized model", short=True, lock=True)
    quantize: BnbScheme = option(
        BnbScheme.nf4,
        help="bitsandbytes scheme: bnb-nf4 (4-bit NormalFloat) or bnb-int8 (LLM.int8).",
    )
    device: str = device_option()
    eval_dataset: str = option("wikipedia", help="Held-out text for the perplexity before/after.")
    eval_seqlen: int = option(512, help="Tokens per perplexity window.")
    eval_windows: int = option(40, help="Perplexity windows (0: all).")
    overwrite: bool = overwrite_option("an existing output folder")

    def __post_init__(self) -> None:
        check_window_count("--eval-windows", self.eval_windows)

    @property
    def scheme(self) -> str:
        """The scheme's name (``quantize`` as given: a :class:`BnbScheme` or its value)."""
        return getattr(self.quantize, "value", self.quantize)


@register
class BnbExporter(Exporter):
    """The pruned folder's bitsandbytes checkpoint, with the tokenizer, the source's recipe and
    its report with an ``artifacts`` record filed under the scheme (its weights' bytes, the
    perplexity before and after on ``eval_dataset``'s test split, how to load it; in its
    ``details`` the source's bytes and the sparsity kept). The pre-quantization perplexity is
    taken from the source report when it was measured with the same protocol, else measured."""

    name = "bnb"
    config = ExportBnbConfig
    doc = (
        "Quantize a pruned model folder with bitsandbytes for transformers; measure its perplexity."
    )
    formats = tuple(SCHEMES)

    def check(self, source: Path, target: Path, config: ExportBnbConfig) -> None:
        """Raises: BadInputError: not a pruned folder, bad scheme or target, bitsandbytes
        missing."""
        import torch

        read_report(source)
        check_target(target, config.overwrite)
        quantization_config(config.scheme, torch.float32)

    def export(self, source: Path, staging: Path, config: ExportBnbConfig) -> ArtifactRecord:
        from transformers import AutoModelForCausalLM

        from compress.data.calibration import eval_text
        from compress.model.compat import load_tokenizer
        from compress.model.loading import resolve_device
        from evaluators.perplexity import perplexity_of_text

        scheme, windows = config.scheme, config.eval_windows or None
        dataset, seqlen = config.eval_dataset, config.eval_seqlen
        place = resolve_device(config.device)
        text = eval_text(dataset, "test")
        tokenizer = load_tokenizer(source)
        before = baseline_perplexity(read_report(source), dataset, seqlen, windows)
        if before is None:
            dense = AutoModelForCausalLM.from_pretrained(source).to(place).eval()
            before = perplexity_of_text(dense, tokenizer, text, seqlen, windows)["perplexity"]
            del dense
        model = load_quantized(source, scheme, place)
        measured = perplexity_of_text(model, tokenizer, text, seqlen, windows)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for name in (REPORT_NAME, RECIPE_NAME):
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        result = artifact_record(
            format=scheme,
            path=".",
            files={f.name: f.stat().st_size for f in sorted(staging.glob("*.safetensors"))},
            perplexity=perplexity_section(measured, before),
            load=load_snippets(scheme),
            details={
                "description": SCHEMES[scheme],
                "source": str(source),
                "device": str(place),
                "source_bytes": sum(f.stat().st_size for f in source.glob("*.safetensors")),
                "dequantized": quantized_sparsity(model),
            },
        )
        record_artifact(staging, result)
        return result

    def summary(self, record: ArtifactRecord, config: ExportBnbConfig) -> list[str]:
        ppl, source_bytes = record["perplexity"], record["details"]["source_bytes"]
        before = "-" if ppl["before"] is None else f"{ppl['before']:.2f}"
        return [
            f"{record['format']}: {source_bytes / 2**20:.1f} MiB -> {record['bytes'] / 2**20:.1f}"
            f" MiB; perplexity {perplexity_label(ppl)} {before} -> {ppl['after']:.2f}",
            f"wrote {config.output}",
        ]


def quantize_folder(
    source: Path,
    target: Path,
    scheme: str,
    device: str = "auto",
    eval_dataset: str = "wikipedia",
    eval_seqlen: int = 512,
    eval_windows: int | None = 40,
    overwrite: bool = False,
) -> ArtifactRecord:
    """Quantize the pruned folder ``source`` into ``target`` (:class:`BnbExporter`; ``None``
    windows: all); return the record filed in ``target``'s report.

    Raises:
        BadInputError: not a pruned folder, bad scheme or target, bitsandbytes missing.
    """
    config = ExportBnbConfig(
        folder=Path(source),
        output=Path(target),
        quantize=scheme,  # type: ignore[arg-type]  # a scheme name; checked before any work
        device=device,
        eval_dataset=eval_dataset,
        eval_seqlen=eval_seqlen,
        eval_windows=eval_windows or 0,
        overwrite=overwrite,
    )
    return run_export(BnbExporter(), config)


def load_snippets(scheme: str) -> list[dict]:
    """How to load a bitsandbytes folder (``{REPO}``: the repo id or folder); the checkpoint's
    config carries its quantization, so ``from_pretrained`` needs no ``BitsAndBytesConfig``."""
    code = (
        "from transformers import AutoModelForCausalLM\n\n"
        'model = AutoModelForCausalLM.from_pretrained("{REPO}", device_map="auto")'
    )
    return [
        {"runtime": f"transformers with bitsandbytes installed ({scheme}; a GPU)", "code": code}
    ]
