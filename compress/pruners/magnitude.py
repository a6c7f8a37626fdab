"""Magnitude pruning: score ``|W|``, no data, no weight update.

Unstructured masks use one threshold per layer by default, as the magnitude baseline of the
SparseGPT/Wanda papers and their code do; ``scope="row"`` compares weights within each output
row instead (Wanda's comparison group).
"""

from __future__ import annotations

import time

import torch

from compress.masks import SparsityPattern, apply_mask, select_mask
from compress.pruners.base import Pruner, PruneResult, register

SCOPES = ("layer", "row")


@register("magnitude")
class MagnitudePruner(Pruner):
    needs_data = False

    def __init__(self, weight: torch.Tensor, name: str = "layer", scope: str = "layer") -> None:
        super().__init__(weight, name)
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {SCOPES}")
        self.scope = scope

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        start = time.perf_counter()
        weight = self.weight
        mask = select_mask(weight.abs().float(), sparsity, pattern, self.scope == "layer")
        apply_mask(weight, mask)
        return PruneResult(mask, time.perf_counter() - start)
