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


def candidates(target: float, lam: float, count: int = 5) -> list[float]:
    """The sparsities the ``errors`` first pass tries per block: ``count`` evenly over
    ``target ± lam`` (clipped at 0), the target among them."""
    half = count // 2
    return sorted({max(target + lam * k / half, 0.0) for k in range(-half, half + 1)})


def _lower_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower convex hull of ``points`` sorted by x (Andrew's monotone chain)."""
    hull: list[tuple[float, float]] = []
    for x, y in points:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) > 0:  # hull[-1] lies below: keep
                break
            hull.pop()
        hull.append((x, y))
    return hull


def hull_error(points: Sequence[tuple[float, float]], s: float) -> float:
    """The lower convex hull of a block's measured ``(sparsity, error)`` points, at ``s``."""
    hull = _lower_hull(sorted(points))
    for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False):
        if x1 <= s <= x2:
            return y1 + (y2 - y1) * (s - x1) / (x2 - x1)
    return hull[0][1]  # a single point


def allocate_by_errors(
    points: Sequence[Sequence[tuple[float, float]]], sizes: Sequence[int], target: float
) -> list[float]:
    """Per-block sparsities minimising the summed block error at the parameter-weighted mean
    ``target``: the ``errors`` profile's solve.

    ``points[i]`` are block ``i``'s measured ``(sparsity, normalized output error)`` pairs (the
    first pass, see :func:`candidates`). Each block's error is modelled by the lower convex
    hull ``ê_i`` of its points, which makes the problem ``min Σ ê_i(s_i)`` subject to
    ``Σ n_i s_i = t Σ n_i`` separable and convex, so a greedy solve is exact: every block
    starts at its lowest candidate, and the zeros still missing are handed out one hull segment
    at a time, the segment with the least error per zero first (a block's segments come in
    order, their slopes rising); the last segment taken is taken in part, which makes the mean
    exact. Uniform (every block at ``t``, a candidate) is feasible, and ``ê_i(t) <= e_i(t)``, so
    the result's modelled summed error is never above uniform's measured one.
    Blocks of size 0 (left dense) keep ``target``.
    """
    hulls = [_lower_hull(sorted(p)) if n else [(target, 0.0)] for p, n in zip(points, sizes)]
    alloc = [hull[0][0] for hull in hulls]
    missing = target * sum(sizes) - sum(n * s for n, s in zip(sizes, alloc))
    segments = sorted(
        ((y2 - y1) / ((x2 - x1) * n), i, x2 - x1)
        for i, (hull, n) in enumerate(zip(hulls, sizes))
        if n
        for (x1, y1), (x2, y2) in zip(hull, hull[1:], strict=False)
    )
    for _, i, width in segments:
        if missing <= 0:
            break
        step = min(width, missing / sizes[i])
        alloc[i] += step
        missing -= step * sizes[i]
    return alloc


def carried(planned: Sequence[float], sizes: Sequence[int], zeros_done: int) -> float:
    """Block ``i = len(planned) - 1``'s sparsity: its planned share plus the zeros earlier
    blocks' rounding missed (or overshot), so the last block closes the budget exactly."""
    i = len(planned) - 1
    if not sizes[i]:
        return planned[i]
    owed = sum(s * n for s, n in zip(planned, sizes)) - zeros_done
    return min(max(owed / sizes[i], 0.0), 1.0 - 1.0 / sizes[i])
