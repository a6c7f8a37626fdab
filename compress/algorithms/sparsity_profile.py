"""Per-block sparsity targets: OWL (Yin et al., arXiv 2310.05175) and ``errors``.

Both start from a first pass over the dense model (:mod:`compress.engine.profile_pass`), block
by block, from the same statistics the pruner gathers (its :meth:`~compress.algorithms.pruners.base.Pruner.scores`,
``|W|·‖X‖``), and give a plan: one sparsity per block whose parameter-weighted mean is the
target. The engine then prunes block ``i`` at :func:`carried`: its planned share plus the zeros
the earlier blocks' rounding missed, so the last block closes the budget.

OWL prunes a block with more outliers less. A block's *outlier ratio* is the share of its
weights' scores (pooled over its pruned layers) above ``M`` times their mean. The paper sets
``s_i = t - 2λ (r_i - mean r) / (max r - min r)``; that mean is unweighted and the spread can
leave ``t ± λ`` when the ratios are skewed. Here (:func:`owl_plan`) the line is the same, in
``r_i`` and falling, but centred on the parameter-weighted mean ``r̄`` and scaled so the block
furthest from it sits at exactly ``t ± λ``::

    s_i = t - λ (r_i - r̄) / max_j |r_j - r̄|

so every block lies within ``t ± λ`` and ``Σ n_i s_i = t Σ n_i`` exactly (``Σ n_i (r_i - r̄) = 0``).
The two agree whenever the ratios are symmetric about their mean.
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


def owl_plan(
    ratios: Sequence[float], sizes: Sequence[int], target: float, lam: float
) -> list[float]:
    """Per-block sparsities from the outlier ``ratios`` (see the module docstring); blocks of
    size 0 (left dense) keep ``target`` and have no say in the mean."""
    total = sum(sizes)
    if not total:
        return [target] * len(sizes)
    mean = sum(r * n for r, n in zip(ratios, sizes, strict=True)) / total
    furthest = max(abs(r - mean) for r, n in zip(ratios, sizes, strict=True) if n)
    if furthest == 0:
        return [target] * len(sizes)
    return [
        target - lam * (r - mean) / furthest if n else target
        for r, n in zip(ratios, sizes, strict=True)
    ]


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
