"""CCTP, contribution of concept on target prediction: ``Σ_j |ĉ_i · ∂f_j/∂ĉ_i|``.

``f_j`` are the class logits and the derivative is taken at what ``f`` currently reads
(probabilities, or logits for a logit bottleneck, with revealed values in place); ``ĉ_i`` is the
probability: for a logit bottleneck the sigmoid of the logit ``f`` reads, as the official code
does. For a linear ``f`` this is ``ĉ_i · Σ_j |W_ji|``. The Jacobian is taken in chunks of samples (rows of ``f`` are
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
        f, logit = ctx.bottleneck.f, ctx.bottleneck.logit
        inputs = ctx.bottleneck.current_inputs(ctx.values, ctx.mask)
        scores = []
        for x in inputs.split(self.chunk):
            jac = jacobian(lambda z: f(z).sum(dim=0), x, vectorize=True)  # (C, n, k)
            c_hat = torch.sigmoid(x) if logit else x.abs()
            scores.append(c_hat * jac.abs().sum(dim=0))
        return torch.cat(scores).detach()
