"""Sharpness measures against exact Hessians of quadratics and of a small network."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from compress.core.report import check_section
from evaluators.sharpness import (
    HessianOperator,
    lm_loss_fns,
    measure_sharpness,
    top_eigenvalue,
    trace_moments,
)

EIGENVALUES = [6.0, 3.0, 2.0, 1.0, 0.5, 0.1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quadratic_problem():
    """L(x) = ½ xᵀAx with A = Q diag(EIGENVALUES) Qᵀ, so H = A everywhere."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(EIGENVALUES, dtype=torch.float64)) @ q.T
    x = nn.Parameter(torch.randn(6, generator=generator, dtype=torch.float64))
    return a, x, lambda: 0.5 * x @ a @ x


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    a, x, loss = quadratic_problem()
    result = top_eigenvalue(HessianOperator([x], [loss]), iters=200, tol=1e-10)
    assert result["converged"]
    assert result["value"] == pytest.approx(6.0, rel=1e-6)
    assert result["residual"] < 1e-3


def test_power_iteration_sees_only_the_kept_coordinates():
    a, x, loss = quadratic_problem()
    keep = torch.tensor([True, False, True, True, False, True])
    expected = torch.linalg.eigvalsh(a[keep][:, keep]).max().item()
    result = top_eigenvalue(HessianOperator([x], [loss], {x: keep}), iters=300, tol=1e-12)
    assert result["value"] == pytest.approx(expected, rel=1e-6)


def test_hutchinson_is_exact_per_probe_on_a_diagonal_hessian():
    # Rademacher v has v_i² = 1, so vᵀDv = tr(D) and vᵀD²v = tr(D²) for every probe
    d = torch.tensor([4.0, 3.0, 2.0, -1.0], dtype=torch.float64)
    x = nn.Parameter(torch.ones(4, dtype=torch.float64))
    op = HessianOperator([x], [lambda: 0.5 * (d * x * x).sum()], {x: d > 0})
    moments = trace_moments(op, max_power=3, probes=3)
    assert moments["1"]["estimate"] == pytest.approx(9.0)
    assert moments["2"]["estimate"] == pytest.approx(16 + 9 + 4)
    assert moments["3"]["estimate"] == pytest.approx(64 + 27 + 8)
    assert moments["1"]["stderr"] == pytest.approx(0.0)
    assert op.products == 3 * 2  # ⌈3/2⌉ products per probe


def test_mean_over_loss_closures():
    x = nn.Parameter(torch.ones(2, dtype=torch.float64))
    fns = [lambda: (x * x).sum(), lambda: 3 * (x * x).sum()]  # H = 2I and 6I -> mean 4I
    hv = HessianOperator([x], fns).matvec([torch.tensor([1.0, -1.0], dtype=torch.float64)])
    torch.testing.assert_close(hv[0], torch.tensor([4.0, -4.0], dtype=torch.float64))


def small_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    return net, lambda: nn.functional.cross_entropy(net(x), y), x, y


def exact_hessian(net, x, y, keep: dict) -> torch.Tensor:
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(theta):
        tensors = theta.split([s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, tensors, shapes, strict=True)}
        return nn.functional.cross_entropy(functional_call(net, params, (x,)), y)

    h = torch.autograd.functional.hessian(loss, flat)
    kept = torch.cat(
        [keep.get(p, torch.ones_like(p, dtype=torch.bool)).reshape(-1) for p in net.parameters()]
    )
    return h[kept][:, kept]


def test_hutchinson_trace_matches_the_exact_trace_of_a_small_network():
    net, loss, x, y = small_network()
    keep = {net[0].weight: torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) > 0.3}
    h = exact_hessian(net, x, y, keep)
    op = HessianOperator(list(net.parameters()), [loss], keep)
    assert op.dimension == h.shape[0]
    moments = trace_moments(op, max_power=2, probes=300, seed=0)
    for k, exact in (("1", torch.trace(h).item()), ("2", torch.trace(h @ h).item())):
        m = moments[k]
        assert abs(m["estimate"] - exact) <= 4 * m["stderr"] + 1e-9
        assert m["estimate"] == pytest.approx(exact, rel=0.1)
        assert m["ci95"][0] < m["estimate"] < m["ci95"][1]
    top = top_eigenvalue(op, iters=300, tol=1e-9)
    eigs = torch.linalg.eigvalsh(h)
    assert top["value"] == pytest.approx(eigs[eigs.abs().argmax()].item(), rel=1e-4)


def test_measure_sharpness_on_a_sparse_tiny_llama_is_json_ready(tiny_llama_1k):
    tiny_llama = tiny_llama_1k
    layer = tiny_llama.model.layers[0].mlp.up_proj
    keep = torch.rand(layer.weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.no_grad():
        layer.weight.mul_(keep)
    ids = torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(0))
    params = [p for p in tiny_llama.parameters() if p.requires_grad]
    result = measure_sharpness(
        params,
        lm_loss_fns(tiny_llama, ids, batch_size=2),
        {layer.weight: keep},
        power_iters=3,
        probes=2,
        max_power=2,
    )
    assert result["dimension"] == sum(p.numel() for p in params) - int((~keep).sum())
    assert result["batches"] == 2
    assert result["hessian_vector_products"] == 3 + 2 * 1
    assert all(
        torch.isfinite(torch.tensor(m["estimate"])) for m in result["trace_moments"].values()
    )
    assert layer.weight.grad is None
    json.dumps(result)


def test_cli_writes_json_report_and_table(tmp_path, tiny_llama, tokenizer):
    from typer.testing import CliRunner

    from compress.cli.main import app

    layer = tiny_llama.model.layers[0].mlp.down_proj
    with torch.no_grad():
        layer.weight[:, :10] = 0
    folder = tmp_path / "model"
    tiny_llama.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "report.json").write_text(json.dumps({"evaluation": {"perplexity": {"after": 9}}}))
    text = tmp_path / "text.txt"
    text.write_text(
        "\n\n".join(f"document {i} tells a short story about boats." for i in range(40))
    )
    args = [
        "eval",
        "sharpness",
        str(folder),
        "--data",
        str(text),
        "--nsamples",
        "2",
        "--seqlen",
        "8",
        "--batch",
        "1",
        "--power-iters",
        "2",
        "--probes",
        "2",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lambda_max" in result.output and "tr(H^2)" in result.output
    saved = json.loads((folder / "sharpness.json").read_text())
    assert saved["pruned_weights_excluded"] == 10 * layer.weight.shape[0]
    assert saved["batches"] == 2 and saved["data"]["nsamples"] == 2
    report = json.loads((folder / "report.json").read_text())
    assert report["evaluation"]["perplexity"] == {"after": 9}
    assert report["evaluation"]["sharpness"] == saved  # validated against the schema:
    assert check_section("evaluation", {"sharpness": saved}) == []


def test_cli_rejects_a_missing_folder(tmp_path):
    from typer.testing import CliRunner

    from compress.cli.main import app

    result = CliRunner().invoke(app, ["eval", "sharpness", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
