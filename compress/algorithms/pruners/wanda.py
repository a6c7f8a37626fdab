"""Wanda (Sun et al., arXiv 2306.11695): score ``S_ij = |W_ij| * ||X_j||_2``.

``||X_j||_2`` is the L2 norm of input feature j over all calibration tokens; scores are
compared within each output row (or each N:M group). No weight update.
We accumulate ``sum_tokens x_j^2`` (``scaler_row``) so batches can be summed across processes
before the square root, one term per sequence in an :class:`~compress.algorithms.distributed.ExactSum`:
the float32 norms then come out the same however the sequences were cut into batches and ranks
(a plain sum would differ in its last bits with the order of the additions, and flip
near-tied scores).
"""

from __future__ import annotations

import time

import torch

from compress.algorithms.distributed import ExactSum
from compress.algorithms.masks import SparsityPattern, apply_mask, select_mask
from compress.algorithms.pruners.base import Pruner, PruneResult, register, sequences
from compress.core.methods import WandaOptions


@register(WandaOptions)
class WandaPruner(Pruner):
    shares = ("scaler_row",)

    def __init__(
        self, weight: torch.Tensor, name: str = "layer", options: WandaOptions | None = None
    ) -> None:
        super().__init__(weight, name)
        self.scaler_row = ExactSum((weight.shape[1],), weight.device)

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor) -> None:
        for x in sequences(inp.to(self.weight.device)):
            self.scaler_row.add_(x.pow(2).sum(dim=0))
            self.nsamples += x.shape[0]

    def statistics(self) -> list[ExactSum]:
        return [self.scaler_row]

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        return self.weight.abs().float() * self.scaler_row.value().float().sqrt().unsqueeze(0)

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        start = time.perf_counter()
        mask = select_mask(self.scores(), sparsity, pattern)
        apply_mask(self.weight, mask)
        return PruneResult(mask, time.perf_counter() - start)

    def free(self) -> None:
        self.scaler_row.free()
