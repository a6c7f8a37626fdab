"""Re-running ``f`` on an evaluation set with some concepts replaced by an expert's values.

An intervention state is a bool ``mask`` (M, k) of revealed concepts and the ``values`` (M, k)
``f`` must read there; ``rows`` (M,) says which evaluation sample each state belongs to, so the
criteria can evaluate many hypothetical states of one sample at once. Unrevealed concepts are
conceptualised (soft / hard / sampled, :class:`~evaluators.cbm.models.Conceptualisation`).

Values written for a concept set to 0 / 1 (``low`` / ``high``, shape (k,)): 0 and 1 for a
sigmoid bottleneck; for a logit bottleneck the 5th / 95th percentile of that concept's predicted
logits on the evaluation set (Shin et al., Sec. 3). Hard and sampled conceptualisation of a
logit bottleneck use the same two values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compress.core.errors import BadInputError
from evaluators.cbm.config import ReplacementValues
from evaluators.cbm.data.base import class_majority
from evaluators.cbm.models import ConceptBottleneckModel, Conceptualisation


@dataclass
class Bottleneck:
    """What ``f`` reads for each evaluation sample, and how an intervention changes it."""

    f: nn.Module
    probs: torch.Tensor  # ĉ (N, k)
    soft: torch.Tensor  # f's soft input (N, k): ĉ or the logits
    low: torch.Tensor  # (k,) value for concept = 0
    high: torch.Tensor  # (k,) value for concept = 1
    mode: Conceptualisation = Conceptualisation.SOFT
    uniforms: torch.Tensor | None = None  # (S, N, k) fixed draws for sampled conceptualisation
    logit: bool = False  # f reads logits (JNT), not probabilities

    def value_of(self, target: torch.Tensor) -> torch.Tensor:
        """f-input values for binary targets (..., k)."""
        return torch.where(target > 0.5, self.high, self.low)

    def base_inputs(self, rows: torch.Tensor) -> torch.Tensor:
        """Conceptualised inputs (S, M, k) for the samples ``rows`` (S = 1 unless sampled)."""
        if self.mode is Conceptualisation.SOFT:
            return self.soft[rows].unsqueeze(0)
        if self.mode is Conceptualisation.HARD:
            return self.value_of(self.probs[rows]).unsqueeze(0)
        return torch.where(self.uniforms[:, rows] < self.probs[rows], self.high, self.low)

    def inputs(self, rows: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What ``f`` reads (S, M, k): ``values`` where ``mask``, conceptualised elsewhere."""
        return torch.where(mask, values, self.base_inputs(rows))

    @torch.no_grad()
    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (M, C) for inputs (S, M, k), averaged over the S draws."""
        return torch.softmax(self.f(inputs), dim=-1).mean(dim=0)

    @torch.no_grad()
    def predict(
        self,
        rows: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        chunk: int = 65536,
    ) -> torch.Tensor:
        """Class probabilities (M, C) with ``values`` written where ``mask`` is True."""
        pieces = zip(rows.split(chunk), values.split(chunk), mask.split(chunk), strict=True)
        return torch.cat([self.probabilities(self.inputs(r, v, m)) for r, v, m in pieces])

    def current_inputs(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Deterministic f-inputs (N, k) of a state: sampled draws are replaced by soft values."""
        base = self.value_of(self.probs) if self.mode is Conceptualisation.HARD else self.soft
        return torch.where(mask, values, base)


@torch.no_grad()
def make_bottleneck(
    model: ConceptBottleneckModel,
    x: torch.Tensor,
    mode: Conceptualisation = Conceptualisation.SOFT,
    samples: int = 5,
    percentiles: tuple[float, float] = (5.0, 95.0),
    seed: int = 0,
) -> Bottleneck:
    """Run ``g`` once on ``x`` and fix everything later interventions need."""
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise BadInputError(f"percentiles {percentiles}: need 0 <= low < high <= 100")
    if samples < 1:
        raise BadInputError(f"samples={samples}: use at least 1 Bernoulli draw")
    model.eval()
    logits = model.concept_logits(x)
    k = logits.shape[1]
    if model.bottleneck == "sigmoid":
        low, high = torch.zeros(k), torch.ones(k)
    else:
        q = torch.tensor([percentiles[0] / 100, percentiles[1] / 100])
        low, high = torch.quantile(logits, q, dim=0)
    uniforms = None
    if mode is Conceptualisation.SAMPLED:
        generator = torch.Generator().manual_seed(seed)
        uniforms = torch.rand(samples, *logits.shape, generator=generator)
    return Bottleneck(
        f=model.f,
        probs=torch.sigmoid(logits),
        soft=model.bottleneck_values(logits),
        low=low,
        high=high,
        mode=Conceptualisation(mode),
        uniforms=uniforms,
        logit=model.bottleneck == "logit",
    )


def replacement_targets(
    kind: ReplacementValues,
    c: torch.Tensor,
    y: torch.Tensor,
    reference_c: torch.Tensor,
    reference_y: torch.Tensor,
    n_classes: int,
) -> torch.Tensor:
    """Binary values an expert reveals (N, k): the sample's own concepts, or its class's majority
    vote computed on a reference split (the training data)."""
    if ReplacementValues(kind) is ReplacementValues.INSTANCE:
        return c.clone()
    return class_majority(reference_c, reference_y, n_classes)[y]
