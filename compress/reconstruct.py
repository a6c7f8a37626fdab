"""Reconstruction by gradient descent: make a pruned module reproduce its targets.

Shin et al., "Rethinking Pruning LLMs: Benefits and Pitfalls of Reconstruction Error
Minimization" (arXiv 2406.15524). For one unit ``h`` (a block, or two adjacent blocks for
cross-block reconstruction) with inputs ``x`` and targets ``y``:

    min_w  sum_batches  MSE( h(m ⊙ w; x), y )

Every parameter of the unit trains (norm weights too) except pruned entries: their gradients are
masked before each step and the weights re-masked after it, so the mask never changes. The
paper's settings are the defaults: Adam (0.9, 0.95), no weight decay, lr 2e-4 decaying linearly to
0 without warm-up, MSE. Optionally SAM wraps Adam (SAFE-style), and early stopping watches the
error on held-out inputs after each epoch and keeps the best weights.

This module knows only "a module's parameters, a way to run it on batch ``b``, its inputs, its
targets and its masks".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compress import distributed
from compress.sam import SAM, mask_gradients, mask_weights

# (index of a stored batch as large as the inputs, whose recorded call they use; inputs) -> outputs
RunFn = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class ReconSettings:
    epochs: int = 10
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    optimizer: str = "adam"  # "adam" or "sam" (SAM around Adam)
    rho: float = 2e-4
    early_stop: bool = False
    autocast_dtype: torch.dtype | None = None  # bf16/fp16 forward on GPU; fp32 master weights


class Batches:
    """Read-only view of activation batches; ``get`` moves one to the compute device, ``gather``
    assembles any samples (numbered across batches, in order) into one batch there."""

    def __init__(self, batches: Sequence[torch.Tensor]) -> None:
        self.batches = batches
        self.where = [(b, row) for b, batch in enumerate(batches) for row in range(len(batch))]

    def __len__(self) -> int:
        return len(self.batches)

    def get(self, index: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self.batches[index].to(device=device, dtype=dtype, non_blocking=True)

    def gather(self, samples: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        rows = [self.batches[b][row] for b, row in (self.where[s] for s in samples)]
        return torch.stack(rows).to(device=device, dtype=dtype, non_blocking=True)


def epoch_steps(inputs: Batches, generator: torch.Generator) -> list[tuple[int, list[int]]]:
    """One epoch's steps as (stored batch of the same size, sample numbers), seeded.

    Samples are regrouped every epoch, as the reference code reshuffles them: each batch
    position (slot) is shuffled across the batches independently, then the batches are visited
    in random order. Shuffling by slot lets data-parallel ranks, which each hold some slots of
    every global batch (:func:`compress.distributed.shard`), draw the same permutations and still
    assemble exactly the single-process batches.
    """
    sizes = [len(batch) for batch in inputs.batches]
    starts = [sum(sizes[:b]) for b in range(len(sizes))]
    width, steps = max(sizes), [[] for _ in sizes]
    offset = distributed.rank() * width  # this rank's first slot of a global batch
    for slot in range(distributed.world_size() * width):
        local = slot - offset
        mine = 0 <= local < width
        holders = [b for b, n in enumerate(sizes) if n > local] if mine else sizes
        perm = torch.randperm(len(holders), generator=generator).tolist()
        if mine:
            for target, source in zip(holders, perm):
                steps[target].append(starts[holders[source]] + local)
    order = torch.randperm(len(sizes), generator=generator).tolist()
    return [(b, steps[b]) for b in order]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def normalized_error(
    run: RunFn, inputs: Batches, targets: Batches, device: torch.device, dtype: torch.dtype
) -> float:
    """``sum ||h(x) - y||² / sum ||y||²`` over all batches (the paper's normalized error)."""
    num = den = 0.0
    for b in range(len(inputs)):
        y = targets.get(b, device, torch.float32)
        out = run(b, inputs.get(b, device, dtype)).float()
        num += float((out - y).pow(2).sum())
        den += float(y.pow(2).sum())
    num, den = distributed.sum_floats([num, den])  # ranks stop early together
    return num / max(den, 1e-30)


def _make_optimizer(params: list[nn.Parameter], masks: dict, settings: ReconSettings):
    if settings.optimizer == "sam":
        return SAM(
            params,
            torch.optim.Adam,
            rho=settings.rho,
            masks=masks,
            lr=settings.lr,
            betas=settings.betas,
            weight_decay=0.0,
        )
    return torch.optim.Adam(params, lr=settings.lr, betas=settings.betas, weight_decay=0.0)


def reconstruct(
    params: list[nn.Parameter],
    masks: dict[nn.Parameter, torch.Tensor],
    run: RunFn,
    inputs: Batches,
    targets: Batches,
    settings: ReconSettings,
    generator: torch.Generator,
    holdout: tuple[RunFn, Batches, Batches] | None = None,
) -> dict:
    """Train ``params`` so that ``run`` maps ``inputs`` to ``targets``; masks stay exact.

    Returns losses per epoch, held-out errors per epoch (with early stopping) and seconds.
    """
    start = time.perf_counter()
    device, dtype = params[0].device, params[0].dtype
    optimizer = _make_optimizer(params, masks, settings)
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    total = max(settings.epochs * len(inputs), 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(base, lambda step: 1.0 - step / total)
    epoch_losses: list[float] = []
    watch = settings.early_stop and holdout is not None
    holdout_errors = [normalized_error(*holdout, device, dtype)] if watch else []
    best_state = [p.detach().clone() for p in params] if watch else None
    stopped_early = False

    for _ in range(settings.epochs):
        loss_sum = 0.0
        for b, samples in epoch_steps(inputs, generator):
            x = inputs.gather(samples, device, dtype)
            y = targets.gather(samples, device, torch.float32)

            def closure(b: int = b, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                with _autocast(device, settings.autocast_dtype):
                    out = run(b, x)
                loss = nn.functional.mse_loss(out.float(), y)
                loss.backward()
                mask_gradients(masks)
                return loss

            if isinstance(optimizer, SAM):
                loss = optimizer.step(closure)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = closure()
                optimizer.step()
            mask_weights(masks)
            schedule.step()
            loss_sum += float(loss.detach())
        epoch_losses.append(loss_sum / len(inputs))
        if watch:
            error = normalized_error(*holdout, device, dtype)
            improved = error < min(holdout_errors)
            holdout_errors.append(error)
            if not improved:  # patience 1: held-out error rose, keep the best weights
                stopped_early = True
                break
            best_state = [p.detach().clone() for p in params]

    if stopped_early:
        with torch.no_grad():
            for p, saved in zip(params, best_state):
                p.copy_(saved)
    optimizer.zero_grad(set_to_none=True)
    return {
        "epochs_run": len(epoch_losses),
        "loss": epoch_losses,
        "holdout_error_per_epoch": holdout_errors,  # [0] is before training
        "stopped_early": stopped_early,
        "seconds": round(time.perf_counter() - start, 3),
    }
