"""Intervention levels, budgets, replacement values, conceptualisation and determinism."""

from __future__ import annotations

import pytest
import torch

from evaluators.cbm.bottleneck import (
    Bottleneck,
    ReplacementValues,
    make_bottleneck,
    replacement_targets,
)
from evaluators.cbm.criteria import CRITERIA, Criterion, ScoreContext
from evaluators.cbm.data.base import class_majority
from evaluators.cbm.intervene import (
    InterventionConfig,
    Scope,
    evaluate_interventions,
    membership,
    run_curve,
    select_batch,
    unit_scores,
)
from evaluators.cbm.models import CBMConfig, Conceptualisation, Variant, build_cbm
from evaluators.cbm.store import load_cbm

NEG = float("-inf")


def random_bottleneck(n: int = 12, k: int = 5, classes: int = 3, seed: int = 0) -> Bottleneck:
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, k, generator=generator)
    f = torch.nn.Linear(k, classes)
    return Bottleneck(f=f, probs=probs, soft=probs, low=torch.zeros(k), high=torch.ones(k))


def test_batch_selection_takes_exactly_the_budget():
    scores = torch.tensor(
        [[5.0, 1.0, NEG], [4.0, 3.0, 2.0], [0.0, NEG, NEG], [9.0, 8.0, 7.0], [NEG, NEG, NEG]]
    )
    chosen = select_batch(scores, batch_size=2)
    # batch 1 (rows 0-1): the 2 best pairs 5.0 and 4.0; batch 2 (rows 2-3): 9.0 and 8.0;
    # batch 3 (row 4): nothing is available
    assert chosen.nonzero().tolist() == [[0, 0], [1, 0], [3, 0], [3, 1]]


@pytest.mark.parametrize("scope", [Scope.SINGLE, Scope.BATCH])
def test_curves_spend_n_per_sample_or_n_times_batch(scope):
    b = random_bottleneck(n=12, k=5)
    concepts = (torch.rand(12, 5, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    units = membership([[i] for i in range(5)], 5)
    revealed, spent, error, _ = run_curve(
        b, concepts, concepts, torch.zeros(12, dtype=torch.long), CRITERIA["ucp"](), units,
        torch.ones(5), steps=3, scope=scope, batch_size=4,
    )  # fmt: skip
    # mean concepts per sample after n steps is n in both scopes (batch: n × B per batch of B)
    assert revealed == [0.0, 1.0, 2.0, 3.0]
    assert spent == revealed and len(error) == 4


def test_batch_scope_can_spend_unevenly_within_a_batch():
    probs = torch.tensor([[0.5, 0.51, 0.49], [0.99, 0.98, 0.97]])  # sample 0 uncertain everywhere
    b = Bottleneck(torch.nn.Linear(3, 2), probs, probs, torch.zeros(3), torch.ones(3))
    units = membership([[0], [1], [2]], 3)
    concepts = torch.ones(2, 3)
    revealed, *_ = run_curve(
        b, concepts, concepts, torch.zeros(2, dtype=torch.long), CRITERIA["ucp"](), units,
        torch.ones(3), steps=1, scope=Scope.BATCH, batch_size=2,
    )  # fmt: skip
    assert revealed == [0.0, 1.0]  # budget 1 × 2 = 2 pairs, both from sample 0


def test_group_score_is_the_mean_of_its_members():
    scores = torch.tensor([[1.0, 2.0, 6.0, 4.0], [0.0, 3.0, 3.0, 9.0]])
    units = membership([[0, 2], [1], [3]], 4)
    done = torch.tensor([[False, False, False], [False, True, False]])
    got = unit_scores(scores, units, done)
    assert got.tolist() == [[3.5, 2.0, 4.0], [1.5, NEG, 9.0]]


def test_group_level_reveals_whole_groups_and_counts_concepts():
    b = random_bottleneck(n=6, k=4)
    concepts = torch.ones(6, 4)
    units = membership([[0, 1, 2], [3]], 4)
    revealed, spent, _, _ = run_curve(
        b, concepts, concepts, torch.zeros(6, dtype=torch.long), CRITERIA["lcp"](), units,
        torch.tensor([1.0, 1.0, 1.0, 10.0]), steps=2,
    )  # fmt: skip
    loss = 1 - b.probs  # LCP with every true concept 1
    first = torch.where(loss[:, :3].mean(dim=1) > loss[:, 3], 3.0, 1.0)  # group 0 first, or 1
    assert revealed == [0.0, pytest.approx(first.mean().item()), 4.0]
    assert spent[-1] == 13.0  # all concepts: 1 + 1 + 1 + 10


def test_cost_curve_adds_the_costs_of_revealed_concepts():
    probs = torch.tensor([[0.1, 0.6, 0.45]])  # LCP against c = 1: 0.9, 0.4, 0.55 -> order 0, 2, 1
    b = Bottleneck(torch.nn.Linear(3, 2), probs, probs, torch.zeros(3), torch.ones(3))
    concepts = torch.ones(1, 3)
    _, spent, _, _ = run_curve(
        b, concepts, concepts, torch.zeros(1, dtype=torch.long), CRITERIA["lcp"](),
        membership([[0], [1], [2]], 3), torch.tensor([2.0, 5.0, 7.0]), steps=3,
    )  # fmt: skip
    assert spent == [0.0, 2.0, 9.0, 14.0]


def test_class_level_values_are_majority_votes():
    reference_c = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]])
    reference_y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert class_majority(reference_c.float(), reference_y, 3).tolist() == [
        [1, 1, 0],
        [0, 0, 1],
        [0, 0, 0],  # a class without samples
    ]
    c = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 0])
    targets = replacement_targets(
        ReplacementValues.CLASS, c, y, reference_c.float(), reference_y, 3
    )
    assert targets.tolist() == [[0, 0, 1], [1, 1, 0]]
    own = replacement_targets(ReplacementValues.INSTANCE, c, y, reference_c.float(), reference_y, 3)
    assert torch.equal(own, c)


def test_logit_bottleneck_uses_percentiles_of_predicted_logits():
    model = build_cbm(CBMConfig(4, 3, 2, Variant.JNT, [8]), seed=0)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    b = make_bottleneck(model, x, percentiles=(5, 95))
    logits = model.concept_logits(x).detach()
    torch.testing.assert_close(b.low, torch.quantile(logits, 0.05, dim=0))
    torch.testing.assert_close(b.high, torch.quantile(logits, 0.95, dim=0))
    torch.testing.assert_close(b.soft, logits)
    assert b.logit and not make_bottleneck(build_cbm(CBMConfig(4, 3, 2)), x).logit


def test_hard_and_sampled_conceptualisation():
    probs = torch.tensor([[0.8, 0.3]])
    f = torch.nn.Linear(2, 2)
    hard = Bottleneck(f, probs, probs, torch.zeros(2), torch.ones(2), Conceptualisation.HARD)
    assert hard.base_inputs(torch.tensor([0])).tolist() == [[[1.0, 0.0]]]
    uniforms = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]])  # draws: [1, 0] and [0, 1]
    sampled = Bottleneck(
        f, probs, probs, torch.zeros(2), torch.ones(2), Conceptualisation.SAMPLED, uniforms
    )
    rows, none = torch.tensor([0]), torch.zeros(1, 2, dtype=torch.bool)
    want = (
        torch.softmax(f(torch.tensor([[1.0, 0.0]])), -1)
        + torch.softmax(f(torch.tensor([[0.0, 1.0]])), -1)
    ) / 2
    torch.testing.assert_close(sampled.predict(rows, torch.zeros(1, 2), none), want.detach())


def test_same_seed_same_curves(tiny_folder):
    model, _, spec = load_cbm(tiny_folder)
    from evaluators.cbm.data import load_dataset

    data = load_dataset(spec)
    cfg = dict(criteria=["rand", "ectp"], max_interventions=3, conceptualisation="sampled")
    first = evaluate_interventions(model, data, InterventionConfig(seed=3, **cfg))
    again = evaluate_interventions(model, data, InterventionConfig(seed=3, **cfg))
    assert [c.error for c in first] == [c.error for c in again]
    assert first[0].concepts == [0.0, 1.0, 2.0, 3.0]


def test_informed_criteria_beat_random_on_a_trained_model(tiny_folder):
    from evaluators.cbm.data import load_dataset

    model, _, spec = load_cbm(tiny_folder)
    curves = evaluate_interventions(
        model, load_dataset(spec), InterventionConfig(criteria=["rand", "lcp"], max_interventions=4)
    )
    rand, lcp = (c.error for c in curves)
    assert lcp[0] == rand[0]
    assert lcp[-1] < rand[-1]
    assert curves[0].error_all_revealed <= 0.1


class StateDependent(Criterion):
    """Ranks 0 > 1 > 2 unintervened; once concept 0 is revealed, concept 2 jumps to the top."""

    calls = 0

    def score(self, ctx: ScoreContext) -> torch.Tensor:
        StateDependent.calls += 1
        base = torch.tensor([3.0, 2.0, 1.0]).expand_as(ctx.mask).clone()
        base[:, 2] += 10.0 * ctx.mask[:, 0]
        return base


@pytest.mark.parametrize("rescore, cost, calls", [(False, 11.0, 1), (True, 101.0, 2)])
def test_static_ranking_by_default_rescoring_as_an_option(rescore, cost, calls):
    probs = torch.tensor([[0.4, 0.6, 0.7]])
    b = Bottleneck(torch.nn.Linear(3, 2), probs, probs, torch.zeros(3), torch.ones(3))
    concepts, StateDependent.calls = torch.ones(1, 3), 0
    kwargs = {"rescore": True} if rescore else {}  # the default is the paper's static protocol
    _, spent, _, _ = run_curve(
        b, concepts, concepts, torch.zeros(1, dtype=torch.long), StateDependent(),
        membership([[0], [1], [2]], 3), torch.tensor([1.0, 10.0, 100.0]), steps=2, **kwargs,
    )  # fmt: skip
    # static: ranked once from the unintervened state -> 0 then 1 (cost 11); re-scored -> 0, 2
    assert spent[-1] == cost and StateDependent.calls == calls
    assert InterventionConfig().rescore is False
