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

import numpy as np
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
    score is lowest), so the layer's count is exact to one weight whatever its width. Equal
    scores at a row's threshold are dropped from the lowest column up (as a stable sort does)."""
    rows, cols = score.shape
    n_drop = int(round(sparsity * score.numel()))
    base, extra = divmod(n_drop, rows)
    if n_drop == 0:
        return torch.ones_like(score, dtype=torch.bool)
    if score.device.type == "cpu":
        return torch.from_numpy(_rowwise_keep(score.float().numpy(), base, extra))
    lowest = torch.topk(score, min(base + 1, cols), dim=1, largest=False)
    drop = torch.zeros_like(lowest.indices, dtype=torch.bool)
    drop[:, :base] = True
    if extra:
        next_lowest = lowest.values[:, base]
        drop[torch.topk(next_lowest, extra, largest=False).indices, base] = True
    return torch.ones_like(score, dtype=torch.bool).scatter_(1, lowest.indices, ~drop)


def _rowwise_keep(score: np.ndarray, base: int, extra: int) -> np.ndarray:
    """:func:`rowwise_mask` on a CPU: a row's threshold from one ``np.partition`` (a selection,
    not a sort: torch's CPU ``topk`` of half a row is several times slower), then comparisons;
    only rows with more ties at the threshold than they drop are scanned in order."""
    rows, cols = score.shape
    drops = np.full(rows, base, dtype=np.int64)
    # one kth (several are far slower): left of ``base`` lie a row's ``base`` lowest, unordered
    ordered = np.partition(score, min(base, cols - 1), axis=1)
    lowest_dropped = ordered[:, :base].max(axis=1) if base else np.full(rows, -np.inf, np.float32)
    threshold = lowest_dropped
    if extra:
        next_lowest = np.ascontiguousarray(ordered[:, base])
        more = torch.topk(torch.from_numpy(next_lowest), extra, largest=False).indices.numpy()
        drops[more] += 1
        threshold = np.where(drops > base, next_lowest, lowest_dropped)
    del ordered
    threshold = threshold[:, None]
    keep = score > threshold
    surplus = cols - np.count_nonzero(keep, axis=1) - drops  # ties beyond what the row drops
    for row in np.flatnonzero(surplus > 0):
        tied = np.flatnonzero(score[row] == threshold[row])
        keep[row, tied[len(tied) - surplus[row] :]] = True  # keep the highest-column ties
    return keep


def layerwise_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * numel)`` lowest scores of the whole matrix."""
    n_drop = int(round(sparsity * score.numel()))
    mask = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if n_drop:
        mask[torch.topk(score.flatten(), n_drop, largest=False).indices] = False
    return mask.reshape(score.shape)


def n_m_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the N highest scores in every group of M consecutive columns; of equal
    scores the lower column is kept (as a stable sort does)."""
    rows, cols = score.shape
    if score.device.type == "cpu" and m <= RANKED_GROUP:
        return torch.from_numpy(_ranked_keep(score.float().numpy().reshape(rows, cols // m, m), n))
    groups = score.reshape(rows, cols // m, m)
    keep = torch.sort(groups, dim=2, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
    return mask.reshape(rows, cols)


RANKED_GROUP = 8  # up to this M, a CPU ranks each entry against its group by comparisons


def _ranked_keep(groups: np.ndarray, n: int) -> np.ndarray:
    """:func:`n_m_mask` on a CPU: an entry's rank is how many of its group beat it (higher, or
    equal and in a lower column); it is kept when fewer than ``n`` do. M^2 vectorised
    comparisons, where torch's CPU ``topk`` over millions of tiny groups is several times slower."""
    m = groups.shape[-1]
    rank = np.zeros(groups.shape, dtype=np.int8)
    for i in range(m):
        entry = groups[..., i]
        for j in range(m):
            if j != i:
                beats = groups[..., j] >= entry if j < i else groups[..., j] > entry
                rank[..., i] += beats
    return (rank < n).reshape(groups.shape[0], -1)


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
