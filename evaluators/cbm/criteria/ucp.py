"""UCP, uncertainty of concept prediction: ``1 / |ĉ_i − 0.5|``, most uncertain first."""

from __future__ import annotations

import torch

from evaluators.cbm.criteria.base import Criterion, ScoreContext, register


@register("ucp")
class UncertaintyOfConceptPrediction(Criterion):
    def score(self, ctx: ScoreContext) -> torch.Tensor:
        return 1.0 / (ctx.probs - 0.5).abs().clamp_min(1e-12)
