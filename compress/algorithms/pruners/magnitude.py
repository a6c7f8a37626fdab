"""Magnitude pruning: score ``|W|``, no data, no weight update.

Unstructured masks use one threshold per layer by default, as the magnitude baseline of the
SparseGPT/Wanda papers and their code do; scope ``row`` compares weights within each output
row instead (Wanda's comparison group): ``--magnitude-scope``, :class:`MagnitudeOptions`.
"""

from __future__ import annotations

import time

import torch

from compress.algorithms.masks import SparsityPattern, apply_mask, select_mask
from compress.algorithms.pruners.base import Pruner, PruneResult, register
from compress.core.methods import MagnitudeOptions, MagnitudeScope


@register(MagnitudeOptions)
class MagnitudePruner(Pruner):
    needs_data = False

    def __init__(
        self, weight: torch.Tensor, name: str = "layer", options: MagnitudeOptions | None = None
    ) -> None:
        super().__init__(weight, name)
        self.scope = (options or MagnitudeOptions()).scope

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        start = time.perf_counter()
        weight = self.weight
        mask = select_mask(
            weight.abs().float(), sparsity, pattern, self.scope is MagnitudeScope.layer
        )
        apply_mask(weight, mask)
        return PruneResult(mask, time.perf_counter() - start)
