"""EUDTP, expected uncertainty decrease in target prediction:
``H(p) − [(1 − ĉ_i)·H(p^{i←0}) + ĉ_i·H(p^{i←1})]``."""

from __future__ import annotations

import torch

from evaluators.cbm.criteria.base import (
    Criterion,
    ScoreContext,
    counterfactual_predictions,
    entropy,
    register,
)


@register("eudtp")
class ExpectedUncertaintyDecreaseInTargetPrediction(Criterion):
    def score(self, ctx: ScoreContext) -> torch.Tensor:
        p, p0, p1 = counterfactual_predictions(ctx)
        c_hat = ctx.probs
        return entropy(p).unsqueeze(1) - ((1 - c_hat) * entropy(p0) + c_hat * entropy(p1))
