"""Sharpness of a solution: top Hessian eigenvalue and Hessian trace moments, mask-aware.

Only Hessian-vector products are formed (Pearlmutter's trick: ``Hv = ∇(∇L · v)``, a second
backward through the first), so memory stays a few copies of the parameters.

- ``λ_max``: power iteration ``v ← Hv / ||Hv||``, Rayleigh quotient ``λ = vᵀHv``; it converges to
  the eigenvalue of largest magnitude. The residual ``||Hv − λv||`` bounds the distance from
  ``λ`` to the nearest true eigenvalue (H is symmetric).
- ``tr(Hᵏ)``: Hutchinson's estimator ``E[vᵀHᵏv]`` over Rademacher probes ``v`` (Hutchinson 1990;
  used for Hessians in PyHessian, arXiv:1912.07145). With ``u_j = Hʲv``, ``vᵀH²ʲv = u_j·u_j``
  and ``vᵀH²ʲ⁺¹v = u_j·u_{j+1}``, so moments up to ``k`` cost ``⌈k/2⌉`` products per probe.
  The 95% interval is ``mean ± 1.96 · s/√n`` over the ``n`` probes (normal approximation).

Sparse models: with ``masks`` (parameter -> bool keep-mask) every vector is restricted to the
kept coordinates, i.e. the measures are those of ``H_SS``, the Hessian over unpruned weights.
The loss is the mean over ``loss_fns`` (one closure per batch, each returning a scalar loss).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

LossFn = Callable[[], torch.Tensor]
Vector = list[torch.Tensor]
Z95 = 1.959964  # two-sided 95% quantile of the standard normal


def dot(a: Vector, b: Vector) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


class HessianOperator:
    """``v ↦ H v`` for the mean loss over ``loss_fns``, restricted to the kept coordinates."""

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        loss_fns: Sequence[LossFn],
        masks: Mapping[torch.nn.Parameter, torch.Tensor] | None = None,
    ) -> None:
        if not params or not loss_fns:
            raise ValueError("HessianOperator needs at least one parameter and one loss closure")
        self.params = list(params)
        self.loss_fns = list(loss_fns)
        masks = masks or {}
        self.masks = [masks.get(p) for p in self.params]
        self.dimension = sum(
            p.numel() if m is None else int(m.sum())
            for p, m in zip(self.params, self.masks, strict=True)
        )
        self.products = 0

    def restrict(self, v: Vector) -> Vector:
        """``v`` with every pruned coordinate set to zero."""
        return [
            x if m is None else x.masked_fill(~m, 0) for x, m in zip(v, self.masks, strict=True)
        ]

    def rademacher(self, generator: torch.Generator) -> Vector:
        """A ±1 probe on the kept coordinates (0 elsewhere)."""
        v = [
            (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype)
            for p in self.params
        ]
        return self.restrict(v)

    def gaussian(self, generator: torch.Generator) -> Vector:
        v = [torch.randn(p.shape, generator=generator).to(p.device, p.dtype) for p in self.params]
        return self.restrict(v)

    def matvec(self, v: Vector) -> Vector:
        """``H v``, averaged over the loss closures."""
        total = [torch.zeros_like(p) for p in self.params]
        # fused attention kernels (flash, memory-efficient) have no double backward
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            for loss_fn in self.loss_fns:
                grads = torch.autograd.grad(
                    loss_fn(), self.params, create_graph=True, allow_unused=True
                )
                # a gradient that does not depend on the parameters (e.g. of a final bias)
                # has a zero Hessian block; leave it out of the second backward
                live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                if not live:
                    continue
                hv = torch.autograd.grad(
                    [grads[i] for i in live],
                    self.params,
                    grad_outputs=[v[i] for i in live],
                    allow_unused=True,
                )
                for acc, h in zip(total, hv, strict=True):
                    if h is not None:
                        acc.add_(h.detach())
        self.products += 1
        return self.restrict([t / len(self.loss_fns) for t in total])


def top_eigenvalue(op: HessianOperator, iters: int = 20, tol: float = 1e-3, seed: int = 0) -> dict:
    """Largest-magnitude eigenvalue of ``H_SS`` by power iteration.

    Stops when ``|λ_k − λ_{k−1}| ≤ tol · |λ_k|`` or after ``iters`` products.
    """
    v = op.gaussian(torch.Generator().manual_seed(seed))
    norm = math.sqrt(dot(v, v))
    v = [x / norm for x in v]
    value, previous, residual, converged, iterations = 0.0, None, float("nan"), False, 0
    while iterations < iters:
        iterations += 1
        hv = op.matvec(v)
        value = dot(v, hv)
        r = [h - value * x for h, x in zip(hv, v, strict=True)]
        residual = math.sqrt(dot(r, r))
        if previous is not None and abs(value - previous) <= tol * abs(value):
            converged = True
            break
        previous = value
        norm = math.sqrt(dot(hv, hv))
        if norm == 0.0:
            converged = True
            break
        v = [h / norm for h in hv]
    return {
        "value": value,
        "residual": residual,
        "iterations": iterations,
        "converged": converged,
        "tol": tol,
    }


def summarize(samples: Sequence[float]) -> dict:
    """Mean, standard error and normal 95% interval of probe estimates."""
    n = len(samples)
    mean = sum(samples) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in samples) / (n - 1)) if n > 1 else float("nan")
    stderr = std / math.sqrt(n)
    return {
        "estimate": mean,
        "stderr": stderr,
        "ci95": [mean - Z95 * stderr, mean + Z95 * stderr],
        "probes": n,
    }


def trace_moments(op: HessianOperator, max_power: int = 2, probes: int = 10, seed: int = 0) -> dict:
    """Hutchinson estimates of ``tr(H_SSᵏ)`` for ``k = 1..max_power``, keyed by ``str(k)``."""
    if max_power < 1 or probes < 1:
        raise ValueError("max_power and probes must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    samples: dict[int, list[float]] = {k: [] for k in range(1, max_power + 1)}
    for _ in range(probes):
        powers = [op.rademacher(generator)]  # u_0 = v, u_j = H u_{j-1}
        for _ in range((max_power + 1) // 2):
            powers.append(op.matvec(powers[-1]))
        for k in samples:
            j = k // 2
            samples[k].append(dot(powers[j], powers[j + k % 2]))
    return {str(k): summarize(values) for k, values in samples.items()}


def measure_sharpness(
    params: Sequence[torch.nn.Parameter],
    loss_fns: Sequence[LossFn],
    masks: Mapping[torch.nn.Parameter, torch.Tensor] | None = None,
    power_iters: int = 20,
    tol: float = 1e-3,
    probes: int = 10,
    max_power: int = 2,
    seed: int = 0,
) -> dict:
    """``λ_max`` and ``tr(Hᵏ)``, ``k ≤ max_power``, of the mean loss, as a JSON-ready dict."""
    op = HessianOperator(params, loss_fns, masks)
    start = time.perf_counter()
    lambda_max = top_eigenvalue(op, power_iters, tol, seed)
    moments = trace_moments(op, max_power, probes, seed)
    return {
        "dimension": op.dimension,
        "batches": len(op.loss_fns),
        "lambda_max": lambda_max,
        "trace_moments": moments,
        "hessian_vector_products": op.products,
        "seconds": round(time.perf_counter() - start, 3),
        "seed": seed,
    }


def lm_loss_fns(model: torch.nn.Module, ids: torch.Tensor, batch_size: int) -> list[LossFn]:
    """One closure per batch of token windows ``ids`` (N, T): the causal-LM loss of a forward."""
    device = next(model.parameters()).device
    chunks = [chunk.to(device) for chunk in ids.split(batch_size)]
    return [lambda c=chunk: model(input_ids=c, labels=c, use_cache=False).loss for chunk in chunks]


def lm_sharpness(
    model: torch.nn.Module,
    ids: torch.Tensor,
    batch_size: int,
    masks: Mapping[torch.nn.Parameter, torch.Tensor] | None = None,
    **options,
) -> dict:
    """:func:`measure_sharpness` of a causal LM's loss on token windows, over all its parameters.

    ``options`` go to :func:`measure_sharpness` (power_iters, tol, probes, max_power, seed).
    """
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return measure_sharpness(params, lm_loss_fns(model, ids, batch_size), masks, **options)
    finally:
        model.train(was_training)
