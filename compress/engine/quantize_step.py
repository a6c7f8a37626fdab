"""The quantization step: a finished block's kept weights rounded to the run's grid.

It runs once per block, after the block's last reconstruction (so training never moves a
weight off the grid) and before its outputs are propagated, so the next block is calibrated on
the quantized one (GPTQ's sequential order). With ``--quantizer gptq`` each layer gets the OBS
update of SparseGPT's column loop with its mask held fixed, on the statistics of the block's
current inputs; with ``rtn`` it is rounded to nearest. Under ``--method sparsegpt --reconstruct
lr`` the rounding happens inside the pruner's own loop instead (:func:`joint`), and this step
does not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from compress.algorithms.pruners import Pruner
from compress.algorithms.pruners.sparsegpt import SparseGPTPruner
from compress.algorithms.quant.grid import QuantGrid, round_to_nearest
from compress.core.config import PruneConfig, Technique
from compress.core.methods import SparseGPTOptions
from compress.core.quantization import Quantizer
from compress.model.blocks import weight_view

# feeds the leaders' statistics with the block's current inputs
CollectFn = Callable[[dict[str, Pruner]], None]


@dataclass
class Quantized:
    """One layer's outcome: its float16 scales and the relative change of its weights."""

    scales: torch.Tensor
    error: float | None  # ||W_q - W|| / ||W|| (None: rounded inside the pruner's loop)


def grid_of(config: PruneConfig) -> QuantGrid | None:
    q = config.quantize
    return QuantGrid(q.bit_count, q.group_size) if q.enabled else None


def quantizes_only(config: PruneConfig) -> bool:
    """``--method none`` with GPTQ: step 3 is the rounding itself (SparseGPT's loop with the
    weights' zeros as the fixed mask), fed the statistics the pruners' step collects."""
    q = config.quantize
    return q.enabled and q.quantizer is Quantizer.gptq and config.method.value == "none"


def rounds_in_prune_step(config: PruneConfig) -> bool:
    """Whether each layer is rounded in step 3, right after its mask is chosen (nothing
    trains it afterwards): inside SparseGPT's loop, as ``--method none``'s GPTQ, or to nearest;
    otherwise a rounding step runs after reconstruction (Wanda and magnitude with GPTQ need the
    Hessian their own statistics do not hold)."""
    q = config.quantize
    if not q.enabled or config.reconstruct.technique.trains:
        return False
    return joint(config) or quantizes_only(config) or q.quantizer is Quantizer.rtn


def joint(config: PruneConfig) -> bool:
    """Whether SparseGPT's column loop rounds the kept weights as it prunes (one OBS pass)."""
    q = config.quantize
    return (
        q.enabled
        and q.quantizer is Quantizer.gptq
        and config.method.value == "sparsegpt"
        and config.reconstruct.technique is Technique.lr
    )


def relative_error(after: torch.Tensor, before: torch.Tensor) -> float:
    norm = float(before.float().norm())
    return float((after.float() - before.float()).norm()) / norm if norm else 0.0


@torch.no_grad()
def quantize_block(
    layers: dict[str, nn.Module],
    groups: list[list[str]],
    keeps: dict[str, torch.Tensor],
    grid: QuantGrid,
    quantizer: Quantizer,
    options: SparseGPTOptions,
    collect: CollectFn,
) -> dict[str, Quantized]:
    """Round the weights of ``layers`` (one block; ``groups``: siblings reading one input) to
    ``grid``, the positions ``keeps`` (bool, weight-shaped) marks as pruned left exactly zero."""
    out: dict[str, Quantized] = {}
    if quantizer is Quantizer.rtn:
        for name, module in layers.items():
            weight = weight_view(module)
            keep = keeps[name].to(weight.device)
            values, scales = round_to_nearest(weight, grid, keep)
            error = relative_error(values, weight)
            weight.copy_(values.to(weight.dtype))
            out[name] = Quantized(scales.cpu(), error)
        return out
    pruners: dict[str, SparseGPTPruner] = {}
    for group in groups:
        for name in group:
            pruners[name] = SparseGPTPruner(weight_view(layers[name]), name, options)
            if name != group[0]:
                pruners[name].share(pruners[group[0]])
    collect({group[0]: pruners[group[0]] for group in groups})
    for group in groups:
        before = [weight_view(layers[name]).detach().clone() for name in group]
        members = [pruners[name] for name in group]
        masks = [keeps[name].to(m.weight.device) for name, m in zip(group, members)]
        results = SparseGPTPruner.quantize_group(members, masks, grid)
        for name, result, old in zip(group, results, before):
            error = relative_error(weight_view(layers[name]), old)
            out[name] = Quantized(result.scales.cpu(), error)
        pruners[group[0]].free()
    return out
