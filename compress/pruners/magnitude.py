"""Magnitude pruning: score ``|W|``, no data, no weight update."""

from __future__ import annotations

import time

import torch

from compress.masks import SparsityPattern, apply_mask, select_mask
from compress.pruners.base import Pruner, PruneResult, register


@register("magnitude")
class MagnitudePruner(Pruner):
    needs_data = False

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        start = time.perf_counter()
        weight = self.weight
        mask = select_mask(weight.abs().float(), sparsity, pattern)
        apply_mask(weight, mask)
        return PruneResult(mask, time.perf_counter() - start)
