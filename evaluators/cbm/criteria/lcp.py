"""LCP, loss of concept prediction: ``|ĉ_i − c_i|``. It reads the true concepts, so it is an
oracle: the upper bound of what selection alone can achieve."""

from __future__ import annotations

import torch

from evaluators.cbm.criteria.base import Criterion, ScoreContext, register


@register("lcp")
class LossOfConceptPrediction(Criterion):
    def score(self, ctx: ScoreContext) -> torch.Tensor:
        return (ctx.probs - ctx.concepts).abs()
