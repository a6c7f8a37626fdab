"""Reconstruction by gradient descent: make a pruned module reproduce its targets.

Shin et al., "Rethinking Pruning LLMs: Benefits and Pitfalls of Reconstruction Error
Minimization" (arXiv 2406.15524). For one unit ``h`` (a block, or two adjacent blocks for
cross-block reconstruction) with inputs ``x`` and targets ``y``:

    min_w  sum_batches  MSE( h(m ⊙ w; x), y )

Every parameter of the unit trains (norm weights too) except pruned entries: their gradients are
masked before each step and the weights re-masked after it, so the mask never changes. The
paper's settings are the defaults: Adam (0.9, 0.95), no weight decay, lr decaying linearly to 0
without warm-up, MSE; the lr is the paper's 2e-4 at its 320 steps per block and larger for
smaller budgets (:meth:`ReconstructConfig.learning_rate`). Optionally SAM wraps Adam
(SAFE-style), and early stopping watches the error on held-out inputs after each epoch and keeps
the best weights.

This module knows only "a module's parameters, a way to run it on batch ``b``, its inputs, its
targets and its masks".
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from compress.algorithms import distributed
from compress.algorithms.sam import SAM, mask_gradients, mask_weights
from compress.core.config import ReconOptimizer, ReconSchedule, ReconstructConfig

# (index of a stored batch as large as the inputs, whose recorded call they use; inputs) -> outputs
RunFn = Callable[[int, torch.Tensor], torch.Tensor]
BETAS = (0.9, 0.95)  # the paper's Adam betas


class Batches:
    """Read-only view of activation batches; ``get`` moves one to the compute device, ``gather``
    assembles any samples (numbered across batches, in order) into one batch there."""

    def __init__(self, batches: Sequence[torch.Tensor]) -> None:
        self.batches = batches
        self.where = [(b, row) for b, batch in enumerate(batches) for row in range(len(batch))]

    def __len__(self) -> int:
        return len(self.batches)

    def rows(self, index: int) -> int:
        return self.batches[index].shape[0]

    def get(self, index: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self.batches[index].to(device=device, dtype=dtype, non_blocking=True)

    def gather(self, samples: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if not samples:  # this rank holds no slot of the step's batch
            return self.batches[0][:0].to(device=device, dtype=dtype)
        rows = [self.batches[b][row] for b, row in (self.where[s] for s in samples)]
        return torch.stack(rows).to(device=device, dtype=dtype, non_blocking=True)


def epoch_steps(
    sizes: list[int], global_sizes: list[int], width: int, generator: torch.Generator
) -> list[tuple[int, list[int]]]:
    """One epoch's steps as (stored batch of the same size, sample numbers), seeded.

    Samples are regrouped every epoch, as the reference code reshuffles them: each batch
    position (slot) is shuffled across the batches that have it, independently, then the batches
    are visited in random order. ``sizes`` are this process's batch sizes, ``global_sizes`` those
    of the whole batches over all ranks, ``width`` the slots a rank holds of a whole batch (see
    :func:`compress.algorithms.distributed.local_batches`: rank ``r`` holds slots ``[r·width, (r+1)·width)``).
    Every rank draws the same permutations for every slot, so the ranks' slices of each step put
    together are exactly the single-process batch.
    """
    starts = [sum(sizes[:b]) for b in range(len(sizes))]
    steps: list[list[int]] = [[] for _ in sizes]
    offset = distributed.rank() * width  # this rank's first slot of a whole batch
    for slot in range(max(global_sizes, default=0)):
        holders = [b for b, n in enumerate(global_sizes) if n > slot]
        perm = torch.randperm(len(holders), generator=generator).tolist()
        local = slot - offset
        if 0 <= local < width:
            for target, source in zip(holders, perm):
                steps[target].append(starts[holders[source]] + local)
    order = torch.randperm(len(sizes), generator=generator).tolist()
    return [(b, steps[b]) for b in order]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """The forward in ``dtype`` on a GPU, and in bfloat16 on a CPU too (float16 is a GPU
    format: a CPU runs it slower than float32). On a CPU with native bfloat16 a block's step
    is faster than in float32 (docs/results.md)."""
    supported = device.type == "cuda" or (device.type == "cpu" and dtype is torch.bfloat16)
    if dtype is None or not supported:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def normalized_error(
    run: RunFn, inputs: Batches, targets: Batches, device: torch.device, dtype: torch.dtype
) -> float:
    """``sum ||h(x) - y||² / sum ||y||²`` over all batches (the paper's normalized error)."""
    num = den = 0.0
    for b in range(len(inputs)):
        if not inputs.rows(b):  # this rank's slice of the batch is empty
            continue
        y = targets.get(b, device, torch.float32)
        out = run(b, inputs.get(b, device, dtype)).float()
        num += float((out - y).pow(2).sum())
        den += float(y.pow(2).sum())
    num, den = distributed.sum_floats([num, den])  # ranks stop early together
    return num / max(den, 1e-30)


def lr_factor(schedule: ReconSchedule, step: int, total: int) -> float:
    """The multiple of the base learning rate at ``step`` of ``total`` (0-based, no warm-up)."""
    done = min(step / total, 1.0)
    if schedule is ReconSchedule.cosine:
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if schedule is ReconSchedule.constant:
        return 1.0
    return 1.0 - done


def _make_optimizer(params: list[nn.Parameter], masks: dict, config: ReconstructConfig, lr: float):
    if config.optimizer is ReconOptimizer.sam:
        return SAM(
            params,
            torch.optim.Adam,
            rho=config.rho,
            masks=masks,
            lr=lr,
            betas=BETAS,
            weight_decay=0.0,
            global_epsilon=False,  # the closure already sums gradients over ranks
        )
    return torch.optim.Adam(params, lr=lr, betas=BETAS, weight_decay=0.0)


def reconstruct(
    params: list[nn.Parameter],
    masks: dict[nn.Parameter, torch.Tensor],
    run: RunFn,
    inputs: Batches,
    targets: Batches,
    config: ReconstructConfig,
    generator: torch.Generator,
    holdout: tuple[RunFn, Batches, Batches] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Train ``params`` so that ``run`` maps ``inputs`` to ``targets``; masks stay exact.

    ``config`` gives epochs (or steps: the last epoch may end part-way), learning rate, optimizer, SAM radius and early stopping (its other
    fields are the engine's); ``autocast_dtype`` (bf16/fp16) runs the forward in that dtype on
    a GPU (bf16 on a CPU too, :func:`_autocast`), the master weights staying in float32.

    Returns losses per epoch, held-out errors per epoch (with early stopping) and seconds.

    Data-parallel (``torch.distributed``): ``inputs`` and ``targets`` hold this rank's slice of
    every batch (possibly empty); each rank's loss is its squared error over the whole batch's
    element count, and gradients are summed over ranks, which gives one process's mean loss and
    gradient however the batch was cut.
    """
    start = time.perf_counter()
    device, dtype = params[0].device, params[0].dtype
    total = config.steps or max(config.epochs * len(inputs), 1)
    lr = config.learning_rate(total)
    optimizer = _make_optimizer(params, masks, config, lr)
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    epochs = -(-config.steps // len(inputs)) if config.steps else config.epochs
    steps_run = 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        base, lambda step: lr_factor(config.schedule, step, total)
    )
    epoch_losses: list[float] = []
    watch = config.early_stop and holdout is not None
    holdout_errors = [normalized_error(*holdout, device, dtype)] if watch else []
    best_state = [p.detach().clone() for p in params] if watch else None
    stopped_early = False
    numel = distributed.sum_floats([float(t.numel()) for t in targets.batches])  # whole batches
    sizes = [len(t) for t in inputs.batches]
    global_sizes = [round(n) for n in distributed.sum_floats([float(n) for n in sizes])]
    first = float(sizes[0]) if distributed.rank() == 0 and sizes else 0.0
    width = round(distributed.sum_floats([first])[0])  # rank 0 holds min(width, rows) of batch 0

    for _ in range(epochs):
        loss_sum, taken = 0.0, 0
        for b, samples in epoch_steps(sizes, global_sizes, width, generator):
            if steps_run == total:  # --recon-steps ends inside an epoch
                break
            x = inputs.gather(samples, device, dtype)
            y = targets.gather(samples, device, torch.float32)

            def closure(b: int = b, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                loss = torch.zeros((), device=device)
                if len(x):  # else this rank's slice is empty: it only joins the sum
                    with _autocast(device, autocast_dtype):
                        out = run(b, x)
                    loss = nn.functional.mse_loss(out.float(), y, reduction="sum") / numel[b]
                    loss.backward()
                distributed.sum_gradients(params)
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
            steps_run, taken = steps_run + 1, taken + 1
            loss_sum += float(loss.detach())
        epoch_losses.append(distributed.sum_floats([loss_sum])[0] / max(taken, 1))
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
        "steps_run": steps_run,
        "lr": lr,  # the base rate of the schedule (--recon-lr or the budget's default)
        "loss": epoch_losses,
        "holdout_error_per_epoch": holdout_errors,  # [0] is before training
        "stopped_early": stopped_early,
        "seconds": round(time.perf_counter() - start, 3),
    }
