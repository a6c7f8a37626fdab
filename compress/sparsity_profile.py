"""Per-block sparsity targets: OWL (Yin et al., arXiv 2310.05175), computed block by block.

OWL prunes a block with more outliers less. A block's *outlier ratio* is the share of its
weights' scores (``|W|·‖X‖``, pooled over the block's pruned layers) above ``M`` times their
mean. The paper min-max normalises the ratios of all blocks at once, on the dense model, and
spreads the sparsities over ``target ± λ``. The engine prunes block by block on the sparse
stream, from the statistics its pruners already gathered, so block ``i`` knows the ratios
``r_0 … r_i`` only. Block ``i`` takes the paper's formula over the blocks seen so far::

    s_i = t - 2λ (r_i - mean(r_0..r_i)) / (max(r_0..r_i) - min(r_0..r_i))   (t when all equal)

clamped to ``[t - λ, t + λ]`` and then to what keeps the rest feasible: the later blocks must
still be able to reach the zero budget ``t · P`` (``P``: pruned weights of the whole model)
at sparsities within ``t ± λ``. The budget counts the zeros actually made, so each layer's
rounding is carried forward, and the last block takes exactly what is left: the
parameter-weighted mean sparsity equals ``t`` up to the last block's own rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def outlier_ratio(scores: Iterable[torch.Tensor], m: float) -> float:
    """Share of the pooled ``scores`` above ``m`` times their mean (0 for no scores)."""
    scores = [s.detach().float() for s in scores]
    numel = sum(s.numel() for s in scores)
    if not numel:
        return 0.0
    mean = sum(float(s.sum(dtype=torch.float64)) for s in scores) / numel
    return sum(int((s > m * mean).sum()) for s in scores) / numel


def owl_sparsity(
    ratios: Sequence[float],
    sizes: Sequence[int],
    zeros_done: int,
    target: float,
    lam: float,
) -> float:
    """The sparsity of block ``i = len(ratios) - 1`` (see the module docstring).

    Args:
        ratios: outlier ratios of blocks ``0 … i``.
        sizes: pruned weights per block, for every block of the model.
        zeros_done: zeros made in blocks ``0 … i-1``.
        target: the parameter-weighted mean sparsity ``t`` to reach.
        lam: the spread ``λ`` around ``t``.
    """
    i = len(ratios) - 1
    size, after = sizes[i], sum(sizes[i + 1 :])
    if not size:
        return target
    low, high = max(target - lam, 0.0), target + lam
    ratios = [r for r, n in zip(ratios, sizes, strict=False) if n]  # blocks left dense: no say
    spread = max(ratios) - min(ratios)
    mean = sum(ratios) / len(ratios)
    s = target if spread == 0 else target - 2 * lam * (ratios[-1] - mean) / spread
    s = min(max(s, low), high)
    left = target * sum(sizes) - zeros_done  # zeros still to make, this block included
    s = min(max(s, (left - high * after) / size), (left - low * after) / size)
    return min(max(s, 0.0), 1.0 - 1.0 / size)
