"""Sparsity patterns and the mask mechanics every pruner shares.

A mask is a bool tensor shaped like the weight, True where the weight is *kept*.
Selection helpers take a score (higher = more important) and return such a mask:

- unstructured, per output row: drop the lowest scores of each row (Wanda's comparison
  group), ``round(s * numel)`` in the layer: ``k`` or ``k + 1`` per row;
- unstructured, per layer: drop the ``round(s * numel)`` lowest scores of the whole matrix (one
  threshold per layer: the magnitude baseline of the SparseGPT/Wanda papers and their code);
- N:M: in every group of M consecutive input weights of a row keep the N highest.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from compress.algorithms.scans import zero_count
from compress.core.patterns import SparsityPattern

__all__ = [
    "SparsityPattern",
    "apply_mask",
    "layerwise_mask",
    "masks_from_zeros",
    "measured_sparsity",
    "n_m_mask",
    "rowwise_mask",
    "select_mask",
    "zero_count",
]


def rowwise_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping ``round(sparsity * numel)`` scores of the layer, the lowest of each
    row: every row drops ``k`` or ``k + 1`` (the ``+1`` going to the rows whose next-lowest
    score is lowest), so the layer's count is exact to one weight whatever its width."""
    rows, cols = score.shape
    n_drop = int(round(sparsity * score.numel()))
    base, extra = divmod(n_drop, rows)
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_drop == 0:
        return mask
    lowest = torch.topk(score, min(base + 1, cols), dim=1, largest=False)
    drop = torch.zeros_like(lowest.indices, dtype=torch.bool)
    drop[:, :base] = True
    if extra:
        next_lowest = lowest.values[:, base]
        drop[torch.topk(next_lowest, extra, largest=False).indices, base] = True
    return mask.scatter_(1, lowest.indices, ~drop)


def layerwise_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * numel)`` lowest scores of the whole matrix."""
    n_drop = int(round(sparsity * score.numel()))
    mask = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if n_drop:
        mask[torch.topk(score.flatten(), n_drop, largest=False).indices] = False
    return mask.reshape(score.shape)


def n_m_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the N highest scores in every group of M consecutive columns."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    keep = torch.topk(groups, n, dim=2).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
    return mask.reshape(rows, cols)


def select_mask(
    score: torch.Tensor, sparsity: float, pattern: SparsityPattern, per_layer: bool = False
) -> torch.Tensor:
    """Keep-mask for ``score`` under ``pattern`` (N:M ignores ``sparsity``); unstructured scores
    compete within each row, or across the whole layer with ``per_layer``."""
    if pattern.structured:
        return n_m_mask(score, pattern.n, pattern.m)
    return layerwise_mask(score, sparsity) if per_layer else rowwise_mask(score, sparsity)


def measured_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    return zero_count(weight) / weight.numel()


def masks_from_zeros(weights: Iterable[torch.Tensor]) -> dict[torch.Tensor, torch.Tensor]:
    """Keep-masks (``weight != 0``) of those ``weights`` that hold exact zeros: the pattern of a
    saved pruned model, read back from the weights themselves."""
    return {w: w.detach() != 0 for w in weights if (w == 0).any()}


@torch.no_grad()
def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of ``weight`` in place."""
    weight.mul_(mask.to(weight.dtype))
