"""The sequential pruning engine: one decoder block at a time.

Per block ``i``, in this order:
  1. collect statistics: run block ``i`` on its inputs (the outputs of the already pruned
     blocks before it) with a pre-hook on every prunable layer feeding its pruner;
  2. prune: each pruner returns a keep-mask for its layer (SparseGPT also updates the weights);
  3. propagate: run the pruned block to produce the inputs of block ``i + 1``.

The engine knows blocks and layers only through :class:`~compress.blocks.BlockAdapter`, and
pruners only through :class:`~compress.pruners.base.Pruner`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.blocks import BlockAdapter, BlockCall, weight_view
from compress.config import PruneConfig
from compress.masks import measured_sparsity
from compress.pruners import PRUNERS, Pruner


class _StopBlock(Exception):
    """Raised once every hooked layer of a block has seen this batch's input."""


@dataclass
class PruneOutcome:
    """Masks and per-layer / per-block measurements for report.json."""

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: dict[str, dict] = field(default_factory=dict)
    blocks: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def split_batches(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(ids.split(batch_size))


def peak_accelerator_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


@torch.no_grad()
def collect_statistics(
    adapter: BlockAdapter,
    index: int,
    pruners: dict[str, Pruner],
    layers: dict[str, nn.Module],
    hidden: list[torch.Tensor],
    calls: list[BlockCall],
) -> None:
    """Feed every pruner the inputs its layer receives, stopping each batch early once the
    last hooked layer has seen its input (the rest of the block is not needed)."""
    seen: set[str] = set()

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            pruners[name].add_batch(args[0])
            seen.add(name)
            if len(seen) == len(pruners):
                raise _StopBlock

        return hook

    handles = [layers[name].register_forward_pre_hook(hook_for(name)) for name in pruners]
    try:
        for state, call in zip(hidden, calls):
            seen.clear()
            try:
                adapter.run_block(index, state, call)
            except _StopBlock:
                pass
    finally:
        for handle in handles:
            handle.remove()


def prune_block(
    adapter: BlockAdapter,
    index: int,
    config: PruneConfig,
    hidden: list[torch.Tensor],
    calls: list[BlockCall],
    outcome: PruneOutcome,
) -> None:
    """Steps 1-2 for block ``index``: statistics, then a mask per prunable layer."""
    layers = adapter.prunable_layers(index, config.skip)
    pattern = config.parsed_pattern
    pruner_cls = PRUNERS[config.method.value]
    pruners = {}
    for name, module in layers.items():
        pruners[name] = pruner_cls(weight_view(module), name)
    if pruner_cls.needs_data and pruners:
        collect_statistics(adapter, index, pruners, layers, hidden, calls)
    for name, pruner in pruners.items():
        target = config.sparsity_for(name)
        result = pruner.prune(target, pattern)
        pruner.free()
        weight = weight_view(layers[name])
        outcome.masks[name] = result.mask
        zeros = int((weight == 0).sum())
        outcome.layers[name] = {
            "shape": list(weight.shape),
            "target_sparsity": target,
            "sparsity": measured_sparsity(weight),
            "zeros": zeros,
            "numel": weight.numel(),
            "seconds": round(result.seconds, 4),
        }


@torch.no_grad()
def propagate(
    adapter: BlockAdapter, index: int, hidden: list[torch.Tensor], calls: list[BlockCall]
) -> list[torch.Tensor]:
    """Step 3: the block's outputs, which are the next block's inputs."""
    return [adapter.run_block(index, state, call) for state, call in zip(hidden, calls)]


def check_widths(adapter: BlockAdapter, config: PruneConfig) -> None:
    """Fail before any work if an N:M pattern does not tile some layer's input width."""
    for index in range(len(adapter)):
        for name, module in adapter.prunable_layers(index, config.skip).items():
            config.parsed_pattern.check_width(weight_view(module).shape[1], name)


def prune_model(
    model: nn.Module,
    calibration_ids: torch.Tensor,
    config: PruneConfig,
    on_block: Callable[[int, int, float], None] | None = None,
) -> PruneOutcome:
    """Prune every decoder block of ``model`` in place, sequentially.

    Args:
        model: a supported causal LM (see :data:`compress.blocks.BLOCK_PATHS`).
        calibration_ids: token ids ``(N, T)``.
        config: method, sparsity, pattern, skips and overrides.
        on_block: called as ``on_block(done, total, tokens_per_second)`` before the first
            block (done = 0) and after each block.
    """
    adapter = BlockAdapter(model)
    check_widths(adapter, config)
    device = model.get_input_embeddings().weight.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    batches = split_batches(calibration_ids, config.calibration.batch_size)
    hidden, calls_per_batch = adapter.capture(batches)
    outcome = PruneOutcome()
    tokens = calibration_ids.numel()
    if on_block:
        on_block(0, len(adapter), 0.0)
    for index in range(len(adapter)):
        block_start = time.perf_counter()
        calls = [batch_calls[index] for batch_calls in calls_per_batch]
        prune_block(adapter, index, config, hidden, calls, outcome)
        hidden = propagate(adapter, index, hidden, calls)
        seconds = time.perf_counter() - block_start
        outcome.blocks.append(
            {
                "index": index,
                "seconds": round(seconds, 3),
                "peak_accelerator_bytes": peak_accelerator_bytes(device),
            }
        )
        if on_block:
            on_block(index + 1, len(adapter), tokens / seconds)
    outcome.seconds = time.perf_counter() - start
    return outcome
