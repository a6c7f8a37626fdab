"""Step 2 of the engine: feed every pruner of a block the inputs its layer sees.

A forward pre-hook on each prunable layer hands its input to the layer's pruner; once every
hooked layer has seen the batch, the block's forward is cut short (the rest of the block does
not change any pruner's statistics), unless the caller wants the block's outputs too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.algorithms.pruners import Pruner


class _StopBlock(Exception):
    """Raised once every hooked layer of a block has seen this batch's input."""


def collect_statistics(
    run: Callable[[int, torch.Tensor], object],
    stream: list[torch.Tensor],
    pruners: dict[str, Pruner],
    layers: dict[str, nn.Module],
    batch_size: int,
    limit: int | None = None,
    keep_outputs: bool = False,
) -> list[torch.Tensor] | None:
    """Run ``run(b, x)`` (the block) on every batch of ``stream``, feeding ``pruners[name]`` the
    input of ``layers[name]``; with ``limit``, only the first ``limit`` sequences count.

    With ``keep_outputs`` every batch runs the whole block and its outputs are returned: the
    statistics and the block's output from one forward (the profiles' first pass)."""
    seen: set[str] = set()
    outputs: list[torch.Tensor] = []
    current = 0  # index of the batch being run

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if limit is not None:
                x = x[: max(limit - current * batch_size, 0)]
            if len(x):
                pruners[name].add_batch(x)
            seen.add(name)
            if len(seen) == len(pruners) and not keep_outputs:
                raise _StopBlock

        return hook

    handles = [layers[name].register_forward_pre_hook(hook_for(name)) for name in pruners]
    try:
        with torch.no_grad():
            for b, x in enumerate(stream):
                if limit is not None and b * batch_size >= limit and not keep_outputs:
                    break
                seen.clear()
                current = b
                try:
                    out = run(b, x)
                except _StopBlock:
                    continue
                if keep_outputs:
                    outputs.append(out)
    finally:
        for handle in handles:
            handle.remove()
    return outputs if keep_outputs else None
