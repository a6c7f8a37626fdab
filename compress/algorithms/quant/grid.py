"""The integer grid weights are quantized to: symmetric, per group of input columns, zero exact.

Each output row is cut into groups of ``group_size`` consecutive input columns (0: the whole row,
one scale per output channel). A group's scale is ``absmax / (2^(b-1) - 1/2)`` rounded to
float16, its integers ``q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1)`` and its value
``q * scale`` (computed in float32, where it is exact, then cast to the model's dtype). This is
the grid the serving formats hold without a second rounding: GGUF Q4_0 / Q8_0 (float16 scale per
32 weights, ``q`` in [-8, 7] / [-128, 127]), ONNX MatMulNBits (zero point 8 / 128 implied) and
compressed-tensors' symmetric ``int`` weights (the same ``absmax / 7.5`` rule, compressed-tensors'
``calculate_qparams``). A pruned weight is ``q = 0``, so it stays exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.core.errors import BadInputError

# float16's smallest positive (subnormal) value: the scale of a group of zeros, or of weights
# too small for a normal float16 scale
MIN_SCALE = 2.0**-24


@dataclass(frozen=True)
class QuantGrid:
    """``bits`` per weight (4 or 8) and ``group_size`` input columns per scale (0: per row)."""

    bits: int
    group_size: int = 32

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def group_of(self, cols: int) -> int:
        """Columns per group for a weight ``cols`` wide."""
        return self.group_size or cols

    def scales(self, w: torch.Tensor) -> torch.Tensor:
        """float16 scales ``(rows,)`` for the values ``w`` ``(rows, group)`` of one group."""
        half_range = (self.qmax - self.qmin) / 2
        absmax = w.detach().abs().amax(dim=1).float()
        return (absmax / half_range).to(torch.float16).clamp_min(MIN_SCALE)

    def integers(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """float32 integers of ``w`` ``(rows, ...)`` on ``scale`` (``(rows,)`` or ``w``-shaped)."""
        scale = scale.float()
        if scale.dim() < w.dim():
            scale = scale.unsqueeze(-1)
        return torch.round(w.float() / scale).clamp_(self.qmin, self.qmax)

    def quantize(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``w``'s values on the grid, float32: ``q * scale``."""
        s = scale.float()
        if s.dim() < w.dim():
            s = s.unsqueeze(-1)
        return self.integers(w, scale) * s

    def expand(self, scales: torch.Tensor, cols: int) -> torch.Tensor:
        """Per-group scales ``(rows, groups)`` repeated to one float32 per weight ``(rows, cols)``."""
        return scales.float().repeat_interleave(self.group_of(cols), dim=1)


def check_grid(grid: QuantGrid, cols: int, name: str) -> None:
    """Refuse a group size that does not divide a layer's input columns."""
    if grid.group_size and cols % grid.group_size:
        raise BadInputError(
            f"{name} has {cols} input columns, which --group-size {grid.group_size} does not "
            f"divide; choose a divisor such as 32 (or 0: one scale per output row)"
        )


def round_to_nearest(
    weight: torch.Tensor, grid: QuantGrid, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of ``weight`` ``(rows, cols)``: (float32 values on the
    grid, float16 scales ``(rows, groups)``). Scales come from the kept weights (``keep``, bool,
    weight-shaped; default: all); pruned weights are 0."""
    rows, cols = weight.shape
    g = grid.group_of(cols)
    w = weight.detach().float()
    if keep is not None:
        w = w * keep
    groups = w.view(rows, cols // g, g)
    scales = grid.scales(groups.reshape(-1, g)).view(rows, cols // g)
    values = grid.quantize(groups, scales).view(rows, cols)
    return values, scales
