"""The record a quantized folder keeps beside its weights: ``quantization.safetensors``.

The folder's weights are the dequantized values the model was evaluated with (``q * scale``
cast to its dtype), so transformers loads it as any checkpoint. The record holds each quantized
weight's float16 scales ``(out_features, groups)`` under the weight's name in the folder (e.g.
``model.layers.0.self_attn.q_proj.weight``; the orientation is ``nn.Linear``'s, out by in), and
the grid in the file's metadata. An exporter gets the integers back with :func:`integers`,
which checks that each weight still lies exactly on its grid, so what it writes holds exactly
the evaluated values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compress.algorithms.quant.grid import QuantGrid
from compress.core.errors import BadInputError

RECORD = "quantization.safetensors"
FORMAT = "compress-symmetric-int-grid"


@dataclass
class QuantRecord:
    """A folder's grid, its quantizer's name and each quantized weight's float16 scales."""

    grid: QuantGrid
    quantizer: str
    scales: dict[str, torch.Tensor]

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "bits": str(self.grid.bits),
            "group_size": str(self.grid.group_size),
            "quantizer": self.quantizer,
        }


def write_record(folder: str | Path, record: QuantRecord) -> Path:
    """Write ``record`` into ``folder`` atomically (a temporary file renamed into place)."""
    path = Path(folder) / RECORD
    tmp = path.with_name(path.name + ".tmp")
    tensors = {
        name: s.detach().to(torch.float16).cpu().contiguous() for name, s in record.scales.items()
    }
    save_file(tensors, str(tmp), metadata=record.metadata())
    os.replace(tmp, path)
    return path


def read_record(folder: str | Path) -> QuantRecord | None:
    """The folder's record, or None when its weights are not quantized."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise BadInputError(
                f"{path} is not a quantization record of this tool; remove it or quantize the "
                f"folder again with `compress quantize`"
            )
        scales = {name: f.get_tensor(name) for name in f.keys()}
    grid = QuantGrid(int(meta["bits"]), int(meta["group_size"]))
    return QuantRecord(grid, meta.get("quantizer", ""), scales)


def integers(
    weight: torch.Tensor, scales: torch.Tensor, grid: QuantGrid, name: str
) -> torch.Tensor:
    """int8 ``q`` ``(out, in)`` with ``q * scale`` (float32, cast to ``weight``'s dtype) equal to
    ``weight``; refuses a weight that is not on its grid (edited after quantization)."""
    expanded = grid.expand(scales, weight.shape[1])
    q = grid.integers(weight.float(), expanded)
    if not torch.equal((q * expanded).to(weight.dtype), weight):
        raise BadInputError(
            f"{name} is not on its recorded int{grid.bits} grid (changed after quantization?); "
            f"quantize the folder again with `compress quantize`"
        )
    return q.to(torch.int8)


def dequantize(
    q: torch.Tensor, scales: torch.Tensor, grid: QuantGrid, dtype: torch.dtype
) -> torch.Tensor:
    """The weight ``q`` and ``scales`` stand for, in ``dtype``: ``q * scale`` in float32, cast."""
    return (q.float() * grid.expand(scales, q.shape[1])).to(dtype)
