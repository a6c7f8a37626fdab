"""Concept bottleneck models (Koh et al., ICML 2020; Shin et al., ICML 2023).

``x`` -> concept predictor ``g`` -> concept logits ``l`` (N, k), ``ĉ = σ(l)`` -> label predictor
``f`` -> class logits (N, C), ``p = softmax(f(·))``. What ``f`` reads is the *bottleneck*:

- ``sigmoid``: ``f(ĉ)`` (IND, SEQ, JNT+P);
- ``logit``:   ``f(l)`` (JNT), so an intervention writes logit values (percentiles, see
  :mod:`evaluators.cbm.bottleneck`).

Training variants: IND (g and f apart, f on true concepts), SEQ (f on g's predictions), JNT
(joint, task loss + λ·concept loss, logit bottleneck), JNT+P (joint, sigmoid bottleneck).
Conceptualisation at test time: soft (probabilities), hard (ĉ > 0.5), sampled (f averaged over
Bernoulli draws of c).
"""

from __future__ import annotations

import torch
from torch import nn

from compress.core.errors import BadInputError
from evaluators.cbm.config import CBMConfig, Conceptualisation, Variant

__all__ = [
    "CBMConfig",
    "ConceptBottleneckModel",
    "Conceptualisation",
    "Variant",
    "build_cbm",
    "mlp",
]


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class ConceptBottleneckModel(nn.Module):
    """``g`` and ``f`` joined by a sigmoid or logit bottleneck; any torch modules work."""

    def __init__(self, g: nn.Module, f: nn.Module, bottleneck: str = "sigmoid") -> None:
        super().__init__()
        if bottleneck not in ("sigmoid", "logit"):
            raise BadInputError(f"bottleneck {bottleneck!r} is unknown: use sigmoid or logit")
        self.g = g
        self.f = f
        self.bottleneck = bottleneck

    def concept_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x)

    def bottleneck_values(self, logits: torch.Tensor) -> torch.Tensor:
        """What ``f`` reads for given concept logits (soft conceptualisation)."""
        return torch.sigmoid(logits) if self.bottleneck == "sigmoid" else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits with soft concepts."""
        return self.f(self.bottleneck_values(self.g(x)))


def build_cbm(config: CBMConfig, seed: int = 0) -> ConceptBottleneckModel:
    """The default CBM for a config, initialised from ``seed`` without touching the global RNG."""
    if min(config.input_dim, config.n_concepts, config.n_classes) < 1:
        raise BadInputError(f"CBM widths must be positive: {config.to_dict()}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = mlp([config.input_dim, *config.concept_hidden, config.n_concepts])
        f = mlp([config.n_concepts, *config.label_hidden, config.n_classes])
    return ConceptBottleneckModel(g, f, config.variant.bottleneck)
