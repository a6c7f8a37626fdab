"""Sparsity patterns and the mask mechanics every pruner shares.

A mask is a bool tensor shaped like the weight, True where the weight is *kept*.
Selection helpers take a score (higher = more important) and return such a mask:

- unstructured, per output row: drop the ``round(s * in_features)`` lowest scores of each row
  (Wanda's comparison group; also used for magnitude);
- N:M: in every group of M consecutive input weights of a row keep the N highest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from compress.errors import BadInputError


@dataclass(frozen=True)
class SparsityPattern:
    """``n``/``m`` are None for unstructured sparsity; otherwise keep N of every M weights."""

    n: int | None = None
    m: int | None = None

    @property
    def structured(self) -> bool:
        return self.m is not None

    @property
    def sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (None when unstructured)."""
        return None if self.m is None else 1.0 - self.n / self.m

    def __str__(self) -> str:
        return "unstructured" if self.m is None else f"{self.n}:{self.m}"

    @classmethod
    def parse(cls, text: str) -> SparsityPattern:
        """Parse ``unstructured`` or ``N:M`` (e.g. ``2:4``)."""
        text = text.strip().lower()
        if text == "unstructured":
            return cls()
        match = re.fullmatch(r"(\d+):(\d+)", text)
        if not match:
            raise BadInputError(
                f"pattern {text!r} is not understood: use 'unstructured' or N:M such as 2:4"
            )
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise BadInputError(f"pattern {text}: N must satisfy 0 < N < M (e.g. 2:4, 4:8)")
        return cls(n, m)

    def check_width(self, in_features: int, layer: str) -> None:
        """Raise if an N:M pattern does not tile the layer's input width."""
        if self.m is not None and in_features % self.m:
            raise BadInputError(
                f"layer {layer}: input width {in_features} is not divisible by M={self.m}; "
                f"choose another pattern or --skip this layer"
            )


def rowwise_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * cols)`` lowest scores of every row."""
    rows, cols = score.shape
    n_drop = int(round(sparsity * cols))
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_drop == 0:
        return mask
    drop = torch.topk(score, n_drop, dim=1, largest=False).indices
    return mask.scatter_(1, drop, False)


def n_m_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the N highest scores in every group of M consecutive columns."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    keep = torch.topk(groups, n, dim=2).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
    return mask.reshape(rows, cols)


def select_mask(score: torch.Tensor, sparsity: float, pattern: SparsityPattern) -> torch.Tensor:
    """Keep-mask for ``score`` under ``pattern`` (N:M ignores ``sparsity``)."""
    if pattern.structured:
        return n_m_mask(score, pattern.n, pattern.m)
    return rowwise_mask(score, sparsity)


def flatten_inputs(inp: torch.Tensor) -> torch.Tensor:
    """Layer inputs ``(..., in_features)`` as float32 ``(tokens, in_features)``."""
    return inp.reshape(-1, inp.shape[-1]).float()


def measured_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    return float((weight == 0).sum().item()) / weight.numel()


@torch.no_grad()
def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of ``weight`` in place."""
    weight.mul_(mask.to(weight.dtype))
