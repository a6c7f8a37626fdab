"""Quantized model folders for the exporters' tests: every Linear of the decoder blocks pruned
(half of each row, by magnitude) and rounded to a grid, saved as the prune command saves a
quantized model (dequantized weights + ``quantization.safetensors``)."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.algorithms.quant.grid import QuantGrid, round_to_nearest
from compress.algorithms.quant.record import QuantRecord, write_record


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers inside the decoder blocks (``model.layers.*``), by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}."
    }


@torch.no_grad()
def quantize_in_place(
    model: torch.nn.Module, grid: QuantGrid, sparsity: float = 0.5
) -> dict[str, torch.Tensor]:
    """Prune and round the block Linears of ``model``; returns the scales by weight name."""
    scales = {}
    for name, layer in block_linears(model).items():
        w = layer.weight
        keep = torch.ones_like(w, dtype=torch.bool)
        if sparsity:
            k = int(w.shape[1] * sparsity)
            low = w.abs().float().topk(k, dim=1, largest=False).indices
            keep.scatter_(1, low, False)
        values, s = round_to_nearest(w, grid, keep)
        w.copy_(values.to(w.dtype))
        scales[f"{name}.weight"] = s
    return scales


def save_quantized(
    model: torch.nn.Module,
    folder: str | Path,
    grid: QuantGrid,
    tokenizer=None,
    sparsity: float = 0.5,
) -> dict[str, torch.Tensor]:
    """``model`` pruned, rounded and saved in ``folder`` with its record; returns its state."""
    scales = quantize_in_place(model, grid, sparsity)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    write_record(folder, QuantRecord(grid, "rtn", scales))
    return {k: v.clone() for k, v in model.state_dict().items()}
