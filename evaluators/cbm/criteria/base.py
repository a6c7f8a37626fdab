"""The concept selection contract: score every (sample, concept); the highest is revealed next.

Shin et al. (ICML 2023, Sec. 3.1). Symbols: ``ĉ`` predicted concept probabilities (N, k),
``c`` true concepts, ``p`` the current class probabilities (N, C), ``p^{i←v}`` the prediction
with concept i set to v (v = 0 or 1, written as ``low``/``high`` f-inputs). Scores of concepts
already revealed are ignored by the caller, so criteria need not mask them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from evaluators.cbm.bottleneck import Bottleneck


@dataclass
class ScoreContext:
    """One intervention state of the evaluation set."""

    bottleneck: Bottleneck
    concepts: torch.Tensor  # true c (N, k): only the oracle LCP reads it
    values: torch.Tensor  # f-input values at revealed entries (N, k)
    mask: torch.Tensor  # revealed (N, k)
    generator: torch.Generator  # RAND's source of randomness

    @property
    def probs(self) -> torch.Tensor:
        return self.bottleneck.probs


class Criterion(ABC):
    """A concept selection criterion; ``score`` returns (N, k), higher = intervene first."""

    name: str = ""

    @abstractmethod
    def score(self, ctx: ScoreContext) -> torch.Tensor: ...


CRITERIA: dict[str, type[Criterion]] = {}


def register(name: str) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator adding a criterion to :data:`CRITERIA` under ``name``."""

    def add(cls: type[Criterion]) -> type[Criterion]:
        cls.name = name
        CRITERIA[name] = cls
        return cls

    return add


@torch.no_grad()
def counterfactual_predictions(
    ctx: ScoreContext, max_states: int = 1 << 22
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``p`` (N, C), ``p^{i←0}`` and ``p^{i←1}`` (N, k, C) for every sample and concept.

    Costs two evaluations of ``f`` per candidate; samples are processed in chunks so that the
    expanded (samples × k, k) inputs stay under ``max_states`` entries.
    """
    b = ctx.bottleneck
    n, k = ctx.mask.shape
    rows = torch.arange(n)
    p = b.predict(rows, ctx.values, ctx.mask)
    outs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    step = max(1, max_states // (k * k))
    for chunk in rows.split(step):
        current = b.inputs(chunk, ctx.values[chunk], ctx.mask[chunk])  # (S, m, k)
        s, m = current.shape[:2]
        for target, out in zip((b.low, b.high), outs, strict=True):
            candidates = current.unsqueeze(2).repeat(1, 1, k, 1)  # (S, m, k candidates, k)
            candidates.diagonal(dim1=2, dim2=3).copy_(target)  # candidate i sets concept i
            out.append(b.probabilities(candidates.reshape(s, m * k, k)).reshape(m, k, -1))
    return p, torch.cat(outs[0]), torch.cat(outs[1])


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy over the last axis (nats)."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last axis (nats); q is clamped away from 0."""
    return (torch.special.xlogy(p, p) - p * q.clamp_min(1e-12).log()).sum(dim=-1)
