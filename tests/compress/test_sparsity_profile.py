"""Non-uniform sparsity: OWL ratios and allocations by hand, the engine's exact mean, refusals."""

import json

import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import prune_model
from compress.sparsity_profile import (
    allocate_by_errors,
    candidates,
    hull_error,
    outlier_ratio,
    owl_sparsity,
)
from tests.tiny_models import random_llama


def test_outlier_ratio_by_hand():
    # pooled scores 1, 1, 1, 1, 10: mean 2.8, M = 2 -> threshold 5.6, one outlier in five
    scores = [torch.tensor([[1.0, 1.0]]), torch.tensor([1.0, 1.0, 10.0])]
    assert outlier_ratio(scores, 2.0) == pytest.approx(0.2)
    assert outlier_ratio(scores, 3.5) == pytest.approx(0.2)  # threshold 9.8
    assert outlier_ratio(scores, 4.0) == 0.0  # threshold 11.2
    assert outlier_ratio([], 5.0) == 0.0


def test_owl_allocation_by_hand():
    sizes, t, lam = [100, 100, 100], 0.5, 0.1
    # block 0: one ratio, no spread -> the target
    assert owl_sparsity([0.2], sizes, 0, t, lam) == pytest.approx(0.5)
    # block 1: mean 0.3, spread 0.2 -> 0.5 - 2 * 0.1 * (0.4 - 0.3) / 0.2 = 0.4 (more outliers)
    assert owl_sparsity([0.2, 0.4], sizes, 50, t, lam) == pytest.approx(0.4)
    # last block: the formula says 0.589, but 150 - 50 - 40 = 60 zeros are left for 100 weights
    assert owl_sparsity([0.2, 0.4, 0.1], sizes, 90, t, lam) == pytest.approx(0.6)
    # block 0 took 0.4: the formula's 0.4 would leave 70 zeros for the last 100 weights, more
    # than t + λ allows, so block 1 is raised to (150 - 40 - 0.6 * 100) / 100 = 0.5
    assert owl_sparsity([0.0, 1.0], sizes, 40, t, lam) == pytest.approx(0.5)
    assert owl_sparsity([0.0, 1.0], sizes, 50, t, lam) == pytest.approx(0.4)


def test_dense_blocks_have_no_say():
    # block 1 is left dense (size 0): its ratio must not widen the spread
    assert owl_sparsity([0.2, 0.9, 0.2], [100, 0, 100], 50, 0.5, 0.1) == pytest.approx(0.5)


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
    assert all(abs(s - 0.6) <= config.owl_lambda + 1e-9 for s in targets[:-1])
    # each block's rounding is carried into the next: only the last block's own rounding
    # remains, at most half a weight per layer (SparseGPT: per 128 columns; these have <= 128)
    last = [name for name in outcome.layers if ".layers.3." in name]
    assert abs(zeros - 0.6 * numel) <= len(last) / 2
    assert sum(block["zeros"] for block in blocks) == zeros
    assert all(block["outlier_ratio"] >= 0 for block in blocks)


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
