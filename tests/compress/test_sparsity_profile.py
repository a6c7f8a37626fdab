"""Non-uniform sparsity: OWL ratios and allocations by hand, the engine's exact mean, refusals."""

import json

import pytest
import torch
from typer.testing import CliRunner

from compress.algorithms.sparsity_profile import (
    allocate_by_errors,
    candidates,
    carried,
    hull_error,
    outlier_ratio,
    owl_plan,
)
from compress.cli.main import app
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import prune_model
from tests.tiny_models import random_llama


def test_outlier_ratio_by_hand():
    # pooled scores 1, 1, 1, 1, 10: mean 2.8, M = 2 -> threshold 5.6, one outlier in five
    scores = [torch.tensor([[1.0, 1.0]]), torch.tensor([1.0, 1.0, 10.0])]
    assert outlier_ratio(scores, 2.0) == pytest.approx(0.2)
    assert outlier_ratio(scores, 3.5) == pytest.approx(0.2)  # threshold 9.8
    assert outlier_ratio(scores, 4.0) == 0.0  # threshold 11.2
    assert outlier_ratio([], 5.0) == 0.0


def test_owl_plan_by_hand():
    # weighted mean ratio (0.1*100 + 0.2*100 + 0.6*200) / 400 = 0.375; furthest: 0.1 (0.275
    # below), at t + λ; the most outliers (0.6), the lowest sparsity
    plan = owl_plan([0.1, 0.2, 0.6], [100, 100, 200], 0.5, 0.09)
    assert plan == pytest.approx([0.59, 0.5 + 0.09 * 0.175 / 0.275, 0.5 - 0.09 * 0.225 / 0.275])
    assert sum(s * n for s, n in zip(plan, [100, 100, 200], strict=True)) == pytest.approx(200)
    assert owl_plan([0.3, 0.3], [10, 10], 0.5, 0.1) == [0.5, 0.5]  # no spread: uniform
    # a block left dense (size 0) keeps the target and does not move the mean
    assert owl_plan([0.1, 0.9, 0.3], [100, 0, 100], 0.5, 0.1) == pytest.approx([0.6, 0.5, 0.4])


def test_rounding_carried_to_the_last_block():
    sizes, plan = [64, 64, 64], [0.45, 0.5, 0.55]
    assert carried(plan[:1], sizes, 0) == pytest.approx(0.45)
    # block 0 rounded 28.8 planned zeros to 29: block 1 is owed 32 - 0.2
    assert carried(plan[:2], sizes, 29) == pytest.approx((28.8 + 32 - 29) / 64)
    assert carried(plan, sizes, 29 + 32) == pytest.approx((96 - 61) / 64)


def owl_run(method: str, sparsity: float = 0.5):
    model = random_llama(vocab_size=256, layers=4)
    config = PruneConfig(
        method=method,
        sparsity=sparsity,
        sparsity_profile="owl",
        owl_m=3.0,
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    return config, prune_model(model, ids, config)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_engine_owl_mean_is_the_target(method):
    config, outcome = owl_run(method, 0.6)
    layers = outcome.layers.values()
    zeros = sum(layer["zeros"] for layer in layers)
    numel = sum(layer["numel"] for layer in layers)
    blocks = [block["sparsity"] for block in outcome.blocks]
    assert [block["profile"] for block in blocks] == ["owl"] * 4
    targets = [block["target"] for block in blocks]
    assert len(set(targets)) > 1  # non-uniform
    assert all(abs(s - 0.6) <= config.owl_lambda + 1e-3 for s in targets)  # + carried rounding
    assert max(abs(s - 0.6) for s in targets) > config.owl_lambda - 1e-3  # the furthest at λ
    # each block's rounding is carried into the next: only the last block's own rounding
    # remains, at most half a weight per layer (SparseGPT: per 128 columns; these have <= 128)
    last = [name for name in outcome.layers if ".layers.3." in name]
    assert abs(zeros - 0.6 * numel) <= len(last) / 2
    assert sum(block["zeros"] for block in blocks) == zeros
    ratios = [block["outlier_ratio"] for block in blocks]
    assert (max(ratios) == ratios[targets.index(min(targets))]) and 0 < min(ratios)


def dense_outlier_ratios(model, ids: torch.Tensor, m: float) -> list[float]:
    """Each block's OWL ratio computed directly: ``|W|·‖X‖`` of every Linear of the block, ``X``
    its input in one forward of the dense model over ``ids``."""
    norms, handles = {}, []
    for i, layer in enumerate(model.model.layers):
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear):

                def hook(mod, args, key=(i, name)):
                    x = args[0].reshape(-1, args[0].shape[-1]).double()
                    norms[key] = (mod, x.pow(2).sum(0).sqrt().float())

                handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    blocks = [[] for _ in model.model.layers]
    for (i, _), (module, norm) in sorted(norms.items()):
        blocks[i].append(module.weight.detach().abs() * norm)
    return [outlier_ratio(scores, m) for scores in blocks]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_first_pass_ratios_equal_a_direct_computation(method):
    """The first pass (siblings sharing statistics, the dense output from the statistics'
    forward) gives each block the ratio of its dense inputs, block after block."""
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    expected = dense_outlier_ratios(random_llama(vocab_size=256, layers=4), ids, 3.0)
    _, outcome = owl_run(method, 0.6)
    ratios = [block["sparsity"]["outlier_ratio"] for block in outcome.blocks]
    numel = [block["sparsity"]["numel"] for block in outcome.blocks]
    # float32 sums in another order may move a score across the threshold: a weight or two
    assert all(abs(r - e) * n <= 2 for r, e, n in zip(ratios, expected, numel, strict=True))
    assert len(set(expected)) > 1


def test_uniform_blocks_record_their_sparsity():
    model = random_llama(vocab_size=256)
    config = PruneConfig(
        sparsity=0.7,
        calibration=CalibrationConfig(nsamples=2, seqlen=8),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    outcome = prune_model(model, torch.randint(0, 256, (2, 8)), config)
    for block in outcome.blocks:
        assert block["sparsity"]["target"] == 0.7
        assert "outlier_ratio" not in block["sparsity"]
    for layer in outcome.layers.values():  # 0.7 x 64 columns is no whole number of weights
        assert abs(layer["zeros"] - 0.7 * layer["numel"]) <= 0.5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pattern": "2:4"}, "N:M fixes every ratio"),
        ({"layer_sparsity": {"*.q_proj": 0.3}}, "drop --layer-sparsity"),
        ({"sparsity": 0.95}, "--sparsity + lambda < 1"),
        ({"sparsity_profile": "peer"}, "choose uniform, owl"),
    ],
)
def test_profile_refusals(settings, message):
    with pytest.raises(BadInputError) as caught:
        PruneConfig(**{"sparsity_profile": "owl", **settings})
    assert message in str(caught.value)


def test_cli_refuses_owl_with_n_m(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["prune", "--pattern", "2:4", "--sparsity-profile", "owl", "--output", str(out)],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "N:M fixes every ratio" in lines[0]
    assert "Traceback" not in result.output and not out.exists()


def test_owl_in_default_name():
    assert PruneConfig(sparsity_profile="owl").output.endswith("-wanda-50-owl-br-gp")


@pytest.mark.slow
def test_owl_prune_report_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "owl"
    fast = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
    args = ["prune", str(tiny_model_dir), *fast, "--sparsity", "0.6", "--reconstruct", "lr"]
    result = CliRunner().invoke(app, [*args, "--sparsity-profile", "owl", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["sparsity_profile"] == "owl"
    assert all(block["sparsity"]["profile"] == "owl" for block in report["blocks"])
    card = (out / "README.md").read_text()
    assert "## Sparsity per block" in card and "Outlier ratio" in card
    plot = tmp_path / "blocks.png"
    drawn = CliRunner().invoke(app, ["info", str(out), "--plot", str(plot)])
    assert drawn.exit_code == 0, drawn.output
    assert plot.stat().st_size > 0


def test_errors_allocation_by_hand():
    steep = [(0.4, 1.0), (0.5, 2.0), (0.6, 4.0)]
    flat = [(0.4, 1.0), (0.5, 1.5), (0.6, 2.0)]  # 0.05 per zero: cheaper than steep's 0.1
    alloc = allocate_by_errors([steep, flat], [100, 100], 0.5)
    assert alloc == pytest.approx([0.4, 0.6])  # summed error 3.0, uniform's 3.5
    # the hull skips a bump: (0.5, 3) lies above the chord from (0.4, 1) to (0.6, 3.2)
    assert hull_error([(0.4, 1.0), (0.5, 3.0), (0.6, 3.2)], 0.5) == pytest.approx(2.1)
    assert candidates(0.5, 0.08) == pytest.approx([0.42, 0.46, 0.5, 0.54, 0.58])


def test_errors_allocation_never_worse_than_uniform():
    gen = torch.Generator().manual_seed(0)
    t, sizes = 0.6, [300, 100, 200, 100]
    grid = candidates(t, 0.1)
    for _ in range(50):
        points = [
            list(zip(grid, torch.rand(len(grid), generator=gen).cumsum(0).tolist(), strict=True))
            for _ in sizes
        ]
        alloc = allocate_by_errors(points, sizes, t)
        assert sum(s * n for s, n in zip(alloc, sizes, strict=True)) == pytest.approx(t * 700)
        assert all(grid[0] - 1e-12 <= s <= grid[-1] + 1e-12 for s in alloc)
        modelled = sum(hull_error(p, s) for p, s in zip(points, alloc, strict=True))
        uniform = sum(dict(p)[t] for p in points)
        assert modelled <= uniform + 1e-12


def test_engine_errors_profile():
    model = random_llama(vocab_size=256, layers=4)
    config = PruneConfig(
        sparsity=0.6,
        sparsity_profile="errors",
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    outcome = prune_model(model, ids, config)
    blocks = [block["sparsity"] for block in outcome.blocks]
    curves = [[tuple(point) for point in block["candidates"]] for block in blocks]
    assert all(len(curve) == 5 and curve[2][0] == pytest.approx(0.6) for curve in curves)
    assert all(curve[0][1] < curve[-1][1] for curve in curves)  # more zeros, more error
    planned = [block["planned"] for block in blocks]
    modelled = sum(hull_error(c, s) for c, s in zip(curves, planned, strict=True))
    assert modelled <= sum(curve[2][1] for curve in curves)
    numel = sum(block["numel"] for block in blocks)
    last = [name for name in outcome.layers if ".layers.3." in name]
    assert abs(sum(block["zeros"] for block in blocks) - 0.6 * numel) <= len(last) / 2
