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
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.errors import BadInputError
from compress.core.io import check_target, publish, staging_folder
from compress.core.report import (
    RECIPE_NAME,
    REPORT_NAME,
    ArtifactRecord,
    artifact_record,
    perplexity_section,
    read_report,
    record_artifact,
    same_protocol,
)

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
    from compress.masks import zero_count

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
    """Quantize the pruned folder ``source`` into ``target``; measure and record the result.

    ``target`` gets the bitsandbytes checkpoint, the tokenizer, the source's recipe and its
    report with an ``artifacts`` record filed under the scheme (its weights' bytes, the
    perplexity before and after on ``eval_dataset``'s test split, how to load it; in its
    ``details`` the source's bytes and the sparsity kept); that record is returned. The pre-quantization perplexity is taken from the
    source report when it was measured with the same protocol, else measured here.

    Raises:
        BadInputError: not a pruned folder, bad scheme or target, bitsandbytes missing.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from compress.calibration import eval_text
    from compress.compat import load_tokenizer
    from compress.models import resolve_device
    from evaluators.perplexity import perplexity_of_text

    source, target = Path(source), Path(target)
    report = read_report(source)
    check_target(target, overwrite)
    quantization_config(scheme, torch.float32)
    place = resolve_device(device)
    text = eval_text(eval_dataset, "test")
    tokenizer = load_tokenizer(source)
    before = baseline_perplexity(report, eval_dataset, eval_seqlen, eval_windows)
    if before is None:
        dense = AutoModelForCausalLM.from_pretrained(source).to(place).eval()
        before = perplexity_of_text(dense, tokenizer, text, eval_seqlen, eval_windows)["perplexity"]
        del dense
    model = load_quantized(source, scheme, place)
    measured = perplexity_of_text(model, tokenizer, text, eval_seqlen, eval_windows)

    staging = staging_folder(target)
    shutil.rmtree(staging, ignore_errors=True)
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
    publish(staging, target)
    return result


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
