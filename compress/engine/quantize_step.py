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

from compress.algorithms.pruners import PRUNERS, Pruner, PruneResult
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


def pruner_of(config: PruneConfig) -> tuple[type[Pruner], object]:
    """The pruner class step 3 builds and its options: ``--method``'s, or SparseGPT's for
    ``--method none`` with GPTQ (its statistics are the Hessian GPTQ needs)."""
    if quantizes_only(config):
        return SparseGPTPruner, config.pruner.sparsegpt
    return PRUNERS[config.method.value], config.pruner_options()


def sibling_pruners(
    cls: type[Pruner], options: object, groups: list[list[str]], layers: dict[str, nn.Module]
) -> dict[str, Pruner]:
    """One pruner per layer; siblings share the first one's statistics, so they are fed,
    reduced and factorised once per group (a sibling's own empty sums go as it shares)."""
    pruners: dict[str, Pruner] = {}
    for group in groups:
        for name in group:
            pruners[name] = cls(weight_view(layers[name]), name, options)
            if name != group[0]:
                pruners[name].share(pruners[group[0]])
    return pruners


@torch.no_grad()
def round_layer(weight: torch.Tensor, grid: QuantGrid, keep: torch.Tensor) -> Quantized:
    """``weight`` rounded to nearest on ``grid`` in place, its pruned positions (``keep``
    False) left zero."""
    values, scales = round_to_nearest(weight, grid, keep.to(weight.device))
    error = relative_error(values, weight)
    weight.copy_(values.to(weight.dtype))
    return Quantized(scales.cpu(), error)


@torch.no_grad()
def gptq_group(
    members: list[Pruner], keeps: list[torch.Tensor], grid: QuantGrid
) -> tuple[list[PruneResult], list[float]]:
    """GPTQ on one group of siblings (SparseGPT pruners fed their statistics), masks held
    fixed: their results and each layer's relative weight change."""
    before = [member.weight.detach().clone() for member in members]
    keeps = [keep.to(member.weight.device) for keep, member in zip(keeps, members)]
    results = SparseGPTPruner.quantize_group(members, keeps, grid)
    return results, [relative_error(m.weight, old) for m, old in zip(members, before)]


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
    if quantizer is Quantizer.rtn:
        return {
            name: round_layer(weight_view(module), grid, keeps[name])
            for name, module in layers.items()
        }
    pruners = sibling_pruners(SparseGPTPruner, options, groups, layers)
    collect({group[0]: pruners[group[0]] for group in groups})
    out: dict[str, Quantized] = {}
    for group in groups:
        members = [pruners[name] for name in group]
        results, errors = gptq_group(members, [keeps[name] for name in group], grid)
        for name, result, error in zip(group, results, errors):
            out[name] = Quantized(result.scales.cpu(), error)
        pruners[group[0]].free()
    return out
