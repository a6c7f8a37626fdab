"""Sparsity patterns and the mask mechanics every pruner shares.

A mask is a bool tensor shaped like the weight, True where the weight is *kept*.
Selection helpers take a score (higher = more important) and return such a mask:

- unstructured, per output row: drop the ``round(s * in_features)`` lowest scores of each row
  (Wanda's comparison group; also used for magnitude);
- N:M: in every group of M consecutive input weights of a row keep the N highest.
"""

from __future__ import annotations

import torch

from compress.patterns import SparsityPattern

__all__ = [
    "SparsityPattern",
    "apply_mask",
    "measured_sparsity",
    "n_m_mask",
    "rowwise_mask",
    "select_mask",
]


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


def measured_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    return float((weight == 0).sum().item()) / weight.numel()


@torch.no_grad()
def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of ``weight`` in place."""
    weight.mul_(mask.to(weight.dtype))
