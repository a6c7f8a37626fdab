"""CCTP, contribution of concept on target prediction: ``Σ_j |ĉ_i · ∂f_j/∂ĉ_i|``.

``f_j`` are the class logits and ``ĉ`` what ``f`` currently reads (probabilities, or logits for
a logit bottleneck, with revealed values in place); for a linear ``f`` this is
``|ĉ_i| · Σ_j |W_ji|``. The Jacobian is taken in chunks of samples (rows of ``f`` are
independent, so one Jacobian of the summed outputs gives every sample's).
"""

from __future__ import annotations

import torch
from torch.autograd.functional import jacobian

from evaluators.cbm.criteria.base import Criterion, ScoreContext, register


@register("cctp")
class ContributionOfConceptOnTargetPrediction(Criterion):
    chunk: int = 512

    def score(self, ctx: ScoreContext) -> torch.Tensor:
        f = ctx.bottleneck.f
        inputs = ctx.bottleneck.current_inputs(ctx.values, ctx.mask)
        scores = []
        for x in inputs.split(self.chunk):
            jac = jacobian(lambda z: f(z).sum(dim=0), x, vectorize=True)  # (C, n, k)
            scores.append(x.abs() * jac.abs().sum(dim=0))
        return torch.cat(scores).detach()
