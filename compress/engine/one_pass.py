"""``--one-pass``: prune a block during its one forward over the whole calibration set.

A forward pre-hook on every prunable layer feeds the layer's group (siblings share one set of
statistics) the input it receives — all calibration sequences at once, in one batch — prunes
the group's layers, and lets the layer run with its pruned weights. The block's output is then
the pruned stream entering the next block, with no second forward. Layers later in the block
are calibrated on the outputs of its already pruned earlier layers (GPTQ's "true sequential"),
where the two-pass engine calibrates every layer on the dense block.
"""

from __future__ import annotations

from collections.abc import Callable

import psutil
import torch
from torch import nn

from compress.algorithms import distributed
from compress.algorithms.pruners import Pruner
from compress.core.config import PruneConfig
from compress.engine.quantize_step import rounds_in_prune_step

PruneGroup = Callable[[list[str]], None]


def one_batch_bytes(config: object, nsamples: int, seqlen: int) -> int:
    """A generous bound on what a decoder block holds while it runs on ``nsamples`` sequences
    at once in float32: the MLP's intermediate activations, a few hidden-width tensors and one
    head's worth of attention scores per sequence."""
    hidden = getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim", None)
    inner = inner or 4 * hidden
    tokens = nsamples * seqlen
    return 4 * (tokens * (3 * inner + 8 * hidden) + nsamples * seqlen * seqlen)


def fits_one_batch(config: object, nsamples: int, seqlen: int, device: torch.device) -> bool:
    """Whether one batch of the whole calibration set runs through a block in half of the
    memory free on ``device`` (RAM for a CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = psutil.virtual_memory().available
    return one_batch_bytes(config, nsamples, seqlen) < free // 2


def one_pass_applies(
    config: PruneConfig,
    stats_samples: int | None,
    model_config: object,
    nsamples: int,
    seqlen: int,
    device: torch.device,
) -> bool:
    """``--one-pass`` where it keeps its promise: nothing trained or measured against the
    dense block, no rounding step after the pruning one (:mod:`.quantize_step`), one process (ranks could not keep equal to it), every sequence feeding the
    statistics (``stats_samples`` None), and the whole calibration set fitting one batch."""
    recon = config.reconstruct
    if not config.one_pass or recon.technique.trains or recon.errors:
        return False
    if config.quantize.enabled and not rounds_in_prune_step(config):
        return False
    if distributed.is_distributed() or stats_samples is not None:
        return False
    return fits_one_batch(model_config, nsamples, seqlen, device)


def hooked_forward(
    run: Callable[[], object],
    groups: list[list[str]],
    pruners: dict[str, Pruner],
    layers: dict[str, nn.Module],
    prune_group: PruneGroup,
) -> object:
    """``run()`` (the block on the whole batch) with every group pruned as its input first
    arrives; groups no input reached (an expert no token was routed to) are pruned after it,
    as the two-pass engine would, from no statistics."""
    group_of = {name: group for group in groups for name in group}
    done: set[str] = set()

    def finish(group: list[str]) -> None:
        done.add(group[0])
        prune_group(group)

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            group = group_of[name]
            if group[0] in done:
                return
            leader = pruners[group[0]]
            if leader.needs_data:
                leader.add_batch(args[0])
            finish(group)

        return hook

    handles = [layers[name].register_forward_pre_hook(hook_for(name)) for name in group_of]
    try:
        out = run()
    finally:
        for handle in handles:
            handle.remove()
    for group in groups:
        if group[0] not in done:
            finish(group)
    return out
