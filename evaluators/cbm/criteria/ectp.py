"""ECTP, expected change in target prediction:
``(1 − ĉ_i)·KL(p^{i←0} ‖ p) + ĉ_i·KL(p^{i←1} ‖ p)``."""

from __future__ import annotations

import torch

from evaluators.cbm.criteria.base import (
    Criterion,
    ScoreContext,
    counterfactual_predictions,
    kl_divergence,
    register,
)


@register("ectp")
class ExpectedChangeInTargetPrediction(Criterion):
    def score(self, ctx: ScoreContext) -> torch.Tensor:
        p, p0, p1 = counterfactual_predictions(ctx)
        p = p.unsqueeze(1)  # (N, 1, C) against (N, k, C)
        c_hat = ctx.probs
        return (1 - c_hat) * kl_divergence(p0, p) + c_hat * kl_divergence(p1, p)
