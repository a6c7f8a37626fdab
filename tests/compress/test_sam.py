"""SAM / ASAM against hand computations, masks, accumulation, bf16 and a global ε over gloo."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from compress.algorithms.sam import SAM, accumulated_step


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quadratic(w: torch.Tensor, c: float = 0.0) -> torch.Tensor:
    """L(w) = ½ (w₁² + 2 w₂²) + c w₂, so ∇L = (w₁, 2 w₂ + c)."""
    return 0.5 * (w[0] ** 2 + 2 * w[1] ** 2) + c * w[1]


def sam_step(w: nn.Parameter, c: float = 0.0, **kwargs) -> SAM:
    opt = SAM([w], torch.optim.SGD, lr=0.1, **kwargs)
    opt.step(lambda: quadratic(w, c).backward())
    return opt


def test_one_sam_step_matches_hand_computation():
    # w = (3, 2): g = (3, 4), ||g|| = 5, ρ = 0.5 -> ε = (0.3, 0.4), w + ε = (3.3, 2.4)
    # g' = (3.3, 4.8); SGD lr 0.1 -> w = (3 - 0.33, 2 - 0.48) = (2.67, 1.52)
    w = nn.Parameter(torch.tensor([3.0, 2.0], dtype=torch.float64))
    sam_step(w, rho=0.5)
    torch.testing.assert_close(w.detach(), torch.tensor([2.67, 1.52], dtype=torch.float64))


def test_first_step_moves_by_rho_along_the_gradient_and_second_restores():
    w = nn.Parameter(torch.tensor([3.0, 2.0], dtype=torch.float64))
    opt = SAM([w], torch.optim.SGD, lr=0.0, rho=0.5)
    quadratic(w).backward()
    opt.first_step(zero_grad=True)
    torch.testing.assert_close(w.detach(), torch.tensor([3.3, 2.4], dtype=torch.float64))
    quadratic(w).backward()
    opt.second_step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 2.0], dtype=torch.float64))


def test_asam_matches_its_formula():
    rho, eta, lr = 0.5, 0.01, 0.1
    w0 = [3.0, 2.0]
    g = [w0[0], 2 * w0[1]]
    t = [abs(x) + eta for x in w0]
    norm = math.sqrt(sum((ti * gi) ** 2 for ti, gi in zip(t, g, strict=True)))
    eps = [rho * ti * ti * gi / norm for ti, gi in zip(t, g, strict=True)]
    perturbed = [x + e for x, e in zip(w0, eps, strict=True)]
    g_prime = [perturbed[0], 2 * perturbed[1]]
    expected = [x - lr * gp for x, gp in zip(w0, g_prime, strict=True)]

    w = nn.Parameter(torch.tensor([w0], dtype=torch.float64))  # a (1, 2) weight matrix
    opt = SAM([w], torch.optim.SGD, lr=lr, rho=rho, adaptive=True, eta=eta)
    opt.step(lambda: quadratic(w[0]).backward())
    torch.testing.assert_close(w.detach()[0], torch.tensor(expected, dtype=torch.float64))


def asam_epsilon(named: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ε of one ASAM ascent on L = Σ W + Σ b for a Linear whose weights and bias are all 2."""
    rho, eta = 0.5, 0.01
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(2.0)
    params = layer.named_parameters() if named else layer.parameters()
    opt = SAM(params, torch.optim.SGD, lr=0.0, rho=rho, adaptive=True, eta=eta)
    (layer.weight.sum() + layer.bias.sum()).backward()  # g = 1 everywhere
    opt.first_step()
    return layer.weight.detach()[0] - 2.0, layer.bias.detach() - 2.0


@pytest.mark.parametrize("named", [True, False])
def test_asam_leaves_biases_unscaled(named):
    # official ASAM: T = |w| + η on weights only; biases T = 1. g = 1, t = 2.01 on the two
    # weights: ||T g|| = sqrt(2 t² + 1), ε_w = ρ t² / norm, ε_b = ρ / norm
    t = 2.0 + 0.01
    norm = math.sqrt(2 * t * t + 1)
    eps_w, eps_b = asam_epsilon(named)
    torch.testing.assert_close(eps_w, torch.full((2,), 0.5 * t * t / norm))
    torch.testing.assert_close(eps_b, torch.full((1,), 0.5 / norm))


def test_mask_keeps_pruned_weight_zero_and_out_of_the_norm():
    # w = (3, 0), second entry pruned; c = 5 gives it a gradient of 5 that must be ignored:
    # masked g = (3, 0), ε = (ρ, 0), g' = (3 + ρ, ·) -> w₁ = 3 - 0.1 (3 + ρ)
    rho = 0.5
    w = nn.Parameter(torch.tensor([3.0, 0.0], dtype=torch.float64))
    opt = SAM([w], torch.optim.SGD, lr=0.1, rho=rho, masks={w: torch.tensor([True, False])})
    quadratic(w, c=5.0).backward()
    opt.first_step(zero_grad=True)
    torch.testing.assert_close(w.detach(), torch.tensor([3.0 + rho, 0.0], dtype=torch.float64))
    quadratic(w, c=5.0).backward()
    opt.second_step()
    assert w[1].item() == 0.0
    assert w[0].item() == pytest.approx(3.0 - 0.1 * (3.0 + rho))


def test_mask_survives_many_adamw_steps_with_weight_decay():
    torch.manual_seed(0)
    layer = nn.Linear(8, 4)
    mask = torch.rand(4, 8) > 0.5
    with torch.no_grad():
        layer.weight.mul_(mask)
    opt = SAM(
        layer.parameters(),
        torch.optim.AdamW,
        lr=1e-2,
        weight_decay=0.1,
        rho=0.05,
        masks={layer.weight: mask},
    )
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    for _ in range(5):
        opt.step(lambda: nn.functional.mse_loss(layer(x), y).backward())
    assert torch.equal(layer.weight == 0, ~mask)


def test_per_group_rho_shares_one_norm():
    a = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([4.0], dtype=torch.float64))
    opt = SAM([{"params": [a], "rho": 1.0}, {"params": [b]}], torch.optim.SGD, lr=0.0, rho=0.5)
    (0.5 * a**2 + 0.5 * b**2).sum().backward()  # g = (3, 4), ||g|| = 5
    opt.first_step()
    assert a.item() == pytest.approx(3.0 + 1.0 * 3 / 5)
    assert b.item() == pytest.approx(4.0 + 0.5 * 4 / 5)


def test_bad_mask_and_missing_closure_raise():
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="bool tensor"):
        SAM([w], torch.optim.SGD, lr=0.1, masks={w: torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="closure"):
        SAM([w], torch.optim.SGD, lr=0.1).step()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def test_grad_accumulation_equals_the_doubled_batch():
    torch.manual_seed(1)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    full, accum = _mlp(), _mlp()
    opt_full = SAM(full.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.1)
    opt_accum = SAM(accum.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.1)
    loss = nn.functional.cross_entropy
    for _ in range(3):
        opt_full.step(lambda: loss(full(x), y).backward())
        micro = [lambda s=s: loss(accum(x[s : s + 4]), y[s : s + 4]) / 2 for s in (0, 4)]
        accumulated_step(opt_accum, micro)
    for p, q in zip(full.parameters(), accum.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(2)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    a, b = _mlp(), _mlp()
    opt_a = SAM(a.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.1)
    opt_a.step(lambda: nn.functional.cross_entropy(a(x), y).backward())
    b.load_state_dict(a.state_dict())
    opt_b = SAM(b.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.1)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if read from disk
    assert opt_b.param_groups[0]["rho"] == 0.1
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.step(lambda m=model: nn.functional.cross_entropy(m(x), y).backward())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_bf16_autocast_step_keeps_fp32_weights_and_mask():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    mask = torch.rand(8, 8) > 0.5
    with torch.no_grad():
        model[0].weight.mul_(mask)
    opt = SAM(
        model.parameters(), torch.optim.AdamW, lr=1e-2, rho=0.05, masks={model[0].weight: mask}
    )
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))

    def closure():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = model[2].weight.detach().clone()
    loss = opt.step(closure)
    assert torch.isfinite(loss)
    assert model[0].weight.dtype == torch.float32
    assert torch.equal(model[0].weight == 0, ~mask)
    assert not torch.equal(model[2].weight, before)


def _global_epsilon_worker(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world
    )
    torch.manual_seed(1)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.1)
    part = slice(4 * rank, 4 * rank + 4)
    nn.functional.cross_entropy(model(x[part]), y[part]).backward()
    opt.first_step()
    if rank == 0:
        torch.save([p.detach() for p in model.parameters()], f"{folder}/perturbed.pt")
    dist.destroy_process_group()


def _full_batch_perturbation() -> list[torch.Tensor]:
    torch.manual_seed(1)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.1)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    return [p.detach() for p in model.parameters()]


def test_global_epsilon_averages_gradients_before_the_norm(monkeypatch):
    # Stand-in for a 2-process group: rank 0 holds the first half of the batch and all_reduce
    # adds rank 1's gradients (computed here on the second half).
    import torch.distributed as dist

    expected = _full_batch_perturbation()
    torch.manual_seed(1)
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    other = _mlp()
    nn.functional.cross_entropy(other(x[4:]), y[4:]).backward()
    other_flat = torch.cat([p.grad.reshape(-1) for p in other.parameters()])
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda flat: flat.add_(other_flat))

    model = _mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.0, rho=0.1)
    nn.functional.cross_entropy(model(x[:4]), y[:4]).backward()
    opt.first_step()
    for p, q in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), q)


@pytest.mark.integration
def test_global_epsilon_over_two_gloo_processes_equals_the_full_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_global_epsilon_worker, args=(2, str(tmp_path)), nprocs=2)
    distributed = torch.load(tmp_path / "perturbed.pt")
    for p, q in zip(_full_batch_perturbation(), distributed, strict=True):
        torch.testing.assert_close(p, q)
