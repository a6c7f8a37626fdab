"""RAND: concepts revealed in random order (the baseline of Koh et al.)."""

from __future__ import annotations

import torch

from evaluators.cbm.criteria.base import Criterion, ScoreContext, register


@register("rand")
class Random(Criterion):
    def score(self, ctx: ScoreContext) -> torch.Tensor:
        return torch.rand(ctx.mask.shape, generator=ctx.generator)
