"""Each criterion's score equals its formula on a hand-built 3-concept linear model."""

from __future__ import annotations

import math

import pytest
import torch

from evaluators.cbm.bottleneck import Bottleneck
from evaluators.cbm.criteria import CRITERIA, NAMES, ScoreContext

W = [[2.0, -1.0, 0.5], [-1.0, 3.0, 0.0]]  # f: 3 concepts -> 2 classes
B = [0.1, -0.2]
C_HAT = [[0.9, 0.3, 0.55], [0.2, 0.6, 0.95]]
TRUE = [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def linear_f() -> torch.nn.Linear:
    f = torch.nn.Linear(3, 2)
    with torch.no_grad():
        f.weight.copy_(torch.tensor(W))
        f.bias.copy_(torch.tensor(B))
    return f


def context(mask_first: bool = False) -> ScoreContext:
    probs = torch.tensor(C_HAT)
    bottleneck = Bottleneck(
        f=linear_f(), probs=probs, soft=probs, low=torch.zeros(3), high=torch.ones(3)
    )
    mask = torch.zeros(2, 3, dtype=torch.bool)
    if mask_first:
        mask[1, 0] = True  # sample 1 has concept 0 revealed, true value 0
    concepts = torch.tensor(TRUE)
    return ScoreContext(
        bottleneck, concepts, concepts.clone(), mask, torch.Generator().manual_seed(0)
    )


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def predict(c: list[float]) -> list[float]:
    return softmax(
        [sum(w * x for w, x in zip(row, c, strict=True)) + b for row, b in zip(W, B, strict=True)]
    )


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def entropy(p: list[float]) -> float:
    return -sum(a * math.log(a) for a in p)


def with_value(c: list[float], i: int, v: float) -> list[float]:
    return [v if j == i else x for j, x in enumerate(c)]


def f_inputs(n: int, mask_first: bool) -> list[float]:
    """What f currently reads for sample n (revealed entries hold the true value)."""
    return with_value(C_HAT[n], 0, TRUE[n][0]) if mask_first and n == 1 else list(C_HAT[n])


def expected(name: str, n: int, i: int, mask_first: bool) -> float:
    c_hat, c = C_HAT[n][i], TRUE[n][i]
    x = f_inputs(n, mask_first)
    p, p0, p1 = predict(x), predict(with_value(x, i, 0.0)), predict(with_value(x, i, 1.0))
    return {
        "ucp": 1 / abs(c_hat - 0.5),
        "lcp": abs(c_hat - c),
        "cctp": abs(x[i]) * sum(abs(row[i]) for row in W),
        "ectp": (1 - c_hat) * kl(p0, p) + c_hat * kl(p1, p),
        "eudtp": entropy(p) - ((1 - c_hat) * entropy(p0) + c_hat * entropy(p1)),
    }[name]


@pytest.mark.parametrize("mask_first", [False, True])
@pytest.mark.parametrize("name", ["ucp", "lcp", "cctp", "ectp", "eudtp"])
def test_score_equals_formula(name, mask_first):
    scores = CRITERIA[name]().score(context(mask_first))
    want = torch.tensor([[expected(name, n, i, mask_first) for i in range(3)] for n in range(2)])
    torch.testing.assert_close(scores.float(), want, rtol=1e-5, atol=1e-6)


def test_rand_is_seeded_uniform():
    first = CRITERIA["rand"]().score(context())
    again = CRITERIA["rand"]().score(context())
    assert torch.equal(first, again)
    assert first.shape == (2, 3) and ((first >= 0) & (first < 1)).all()


def test_every_criterion_is_registered_and_tested():
    assert sorted(CRITERIA) == sorted(NAMES)
    assert set(NAMES) == {"rand", "ucp", "lcp", "cctp", "ectp", "eudtp"}


def test_cctp_on_a_logit_bottleneck_weighs_by_the_sigmoid():
    # official code: CCTP reads σ(logit) as ĉ, not the logit itself (which may be negative)
    logits = torch.tensor([[2.0, -1.5, 0.3]])
    bottleneck = Bottleneck(
        f=linear_f(), probs=torch.sigmoid(logits), soft=logits, low=-torch.ones(3),
        high=torch.ones(3), logit=True,
    )  # fmt: skip
    mask = torch.zeros(1, 3, dtype=torch.bool)
    ctx = ScoreContext(bottleneck, torch.ones(1, 3), torch.zeros(1, 3), mask, torch.Generator())
    column_sums = torch.tensor(W).abs().sum(dim=0)
    torch.testing.assert_close(CRITERIA["cctp"]().score(ctx), torch.sigmoid(logits) * column_sums)
