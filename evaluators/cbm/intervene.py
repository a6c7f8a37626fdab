"""Test-time intervention curves: task error vs concepts revealed (and vs their cost).

Shin et al. (ICML 2023, Sec. 3.2). Levels are granularity × scope:

- granularity: **individual** concepts, or **groups** (a group's score is the mean of its
  members' scores; the whole group is revealed at once);
- scope: **single** (each sample gets one more unit per step) or **batch** (each step ranks all
  (sample, unit) pairs of a batch of B samples together and reveals the top B, so after n steps
  the batch has spent exactly n × B units, unevenly across its samples).

Protocol: by default (as the official code does) each criterion scores the concepts once, from
the unintervened predictions, and units are revealed in that order; with ``rescore`` the scores
are recomputed from the current state after every step (a different, stronger method).

Curves record, per step, the mean number of *concepts* revealed per sample (so group and
individual curves compare on what the expert revealed, not on actions), the mean cost of what
was revealed (per-concept costs, 1 each by default) and the task error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from compress.core.errors import BadInputError
from evaluators.cbm.bottleneck import (
    Bottleneck,
    make_bottleneck,
    replacement_targets,
)
from evaluators.cbm.config import (
    Granularity,
    InterventionConfig,
    Scope,
)
from evaluators.cbm.criteria import CRITERIA, Criterion, ScoreContext
from evaluators.cbm.data.base import ConceptDataset
from evaluators.cbm.models import ConceptBottleneckModel


@dataclass
class Curve:
    """One criterion at one level: index t = after t intervention steps."""

    criterion: str
    level: str
    scope: str
    concepts: list[float]
    cost: list[float]
    error: list[float]
    error_all_revealed: float
    error_by_mispredicted: dict[str, dict[str, float]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def membership(groups: list[list[int]], k: int) -> torch.Tensor:
    """(U, k) 0/1 matrix: row u marks the concepts of unit u."""
    units = torch.zeros(len(groups), k)
    for u, members in enumerate(groups):
        units[u, members] = 1.0
    return units


def unit_scores(scores: torch.Tensor, units: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Mean member score per unit (N, U); units already revealed (or NaN) get -inf."""
    means = scores @ units.T / units.sum(dim=1)
    return means.nan_to_num(nan=float("-inf")).masked_fill(done, float("-inf"))


def select_single(scores: torch.Tensor) -> torch.Tensor:
    """(N, U) bool: each sample's best available unit."""
    best = scores.argmax(dim=1, keepdim=True)
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, best, True)
    return chosen & (scores > float("-inf"))  # a sample with every unit revealed gets none


def select_batch(scores: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, U) bool: in each batch of B samples, the B best available (sample, unit) pairs."""
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    for start in range(0, scores.shape[0], batch_size):
        block = scores[start : start + batch_size]
        budget = min(block.shape[0], int((block > float("-inf")).sum()))
        top = block.flatten().topk(budget).indices
        chosen[start : start + batch_size].view(-1)[top] = True
    return chosen


def run_curve(
    bottleneck: Bottleneck,
    concepts: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    criterion: Criterion,
    units: torch.Tensor,
    costs: torch.Tensor,
    steps: int,
    scope: Scope = Scope.SINGLE,
    batch_size: int = 64,
    seed: int = 0,
    rescore: bool = False,
) -> tuple[list[float], list[float], list[float], torch.Tensor]:
    """Reveal ``steps`` units per sample (single) or per batch slot (batch), ranked once from
    the unintervened state, or re-scored after every step with ``rescore``.

    Returns mean concepts revealed, mean cost and task error per step (``steps + 1`` points) and
    the final predictions' correctness (N,) bool.
    """
    n, k = concepts.shape
    rows = torch.arange(n)
    values = bottleneck.value_of(targets)
    mask = torch.zeros(n, k, dtype=torch.bool)
    done = torch.zeros(n, units.shape[0], dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    revealed, spent, error = [], [], []
    ranking = None
    for step in range(steps + 1):
        correct = bottleneck.predict(rows, values, mask).argmax(dim=1) == labels
        revealed.append(mask.sum(dim=1).float().mean().item())
        spent.append((mask.float() @ costs).mean().item())
        error.append(1.0 - correct.float().mean().item())
        if step == steps:
            break
        if rescore or ranking is None:
            ranking = criterion.score(ScoreContext(bottleneck, concepts, values, mask, generator))
        scores = unit_scores(ranking, units, done)
        chosen = (
            select_single(scores) if scope is Scope.SINGLE else select_batch(scores, batch_size)
        )
        done |= chosen
        mask |= (chosen.float() @ units).bool()
    return revealed, spent, error, correct


def error_by_mispredicted(
    mispredicted: torch.Tensor, before: torch.Tensor, after: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Task error before/after, binned by how many concepts each sample had wrong."""
    bins = {}
    for count in mispredicted.unique().tolist():
        members = mispredicted == count
        bins[str(count)] = {
            "samples": int(members.sum()),
            "error_before": 1.0 - before[members].float().mean().item(),
            "error_after": 1.0 - after[members].float().mean().item(),
        }
    return bins


def evaluate_interventions(
    model: ConceptBottleneckModel, data: ConceptDataset, cfg: InterventionConfig
) -> list[Curve]:
    """Every requested criterion × granularity on one split of ``data``."""
    split = data.split(cfg.split)
    if len(split) == 0:
        raise BadInputError(f"the {cfg.split} split of {data.name} is empty: choose another split")
    costs = torch.ones(data.n_concepts) if cfg.costs is None else torch.tensor(cfg.costs).float()
    if costs.shape != (data.n_concepts,) or (costs < 0).any():
        raise BadInputError(f"costs: need {data.n_concepts} non-negative numbers, one per concept")
    b = make_bottleneck(
        model, split.x, cfg.conceptualisation, cfg.samples, cfg.percentiles, cfg.seed
    )
    truth = split.own_c  # each sample's own labels: instance values, LCP, mispredicted bins
    targets = replacement_targets(
        cfg.values, truth, split.y, data.train.c, data.train.y, data.n_classes
    )
    rows, values = torch.arange(len(split)), b.value_of(targets)
    everything = torch.ones_like(targets, dtype=torch.bool)
    error_all = (b.predict(rows, values, everything).argmax(1) != split.y).float().mean().item()
    before = b.predict(rows, values, ~everything).argmax(dim=1) == split.y
    mispredicted = ((b.probs > 0.5).float() != truth).sum(dim=1)
    curves = []
    for level in cfg.levels:
        groups = (
            data.groups if level is Granularity.GROUP else [[i] for i in range(data.n_concepts)]
        )
        units = membership(groups, data.n_concepts)
        for index, name in enumerate(cfg.criteria):
            start = time.perf_counter()
            revealed, spent, error, after = run_curve(
                b, truth, targets, split.y, CRITERIA[name](), units, costs,
                cfg.max_interventions, cfg.scope, cfg.batch_size, cfg.seed + index, cfg.rescore,
            )  # fmt: skip
            curves.append(
                Curve(
                    criterion=name,
                    level=level.value,
                    scope=cfg.scope.value,
                    concepts=revealed,
                    cost=spent,
                    error=error,
                    error_all_revealed=error_all,
                    error_by_mispredicted=error_by_mispredicted(mispredicted, before, after),
                    seconds=time.perf_counter() - start,
                )
            )
    return curves
