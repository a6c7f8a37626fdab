"""``--method none``: prune nothing; the weights' own zeros are the mask.

For quantizing a model as it is (``compress quantize``, or ``compress prune --method none
--quantize int4``): an already pruned model keeps its zeros exactly through the rounding, a
dense one is quantized whole.
"""

from __future__ import annotations

import time

import torch

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners.base import Pruner, PruneResult, register
from compress.core.methods import KeepOptions


@register(KeepOptions)
class KeepPruner(Pruner):
    needs_data = False

    def __init__(
        self, weight: torch.Tensor, name: str = "layer", options: KeepOptions | None = None
    ) -> None:
        super().__init__(weight, name)

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        start = time.perf_counter()
        return PruneResult(self.weight != 0, time.perf_counter() - start)
