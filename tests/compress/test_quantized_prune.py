"""`--quantize` in the engine: every pruner and pattern keeps its pruned weights exactly zero
and its kept weights exactly on the grid, whatever reconstruction runs first."""

import pytest
import torch

from compress.algorithms.quant.grid import QuantGrid, round_to_nearest
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.quantization import QuantizeConfig
from compress.engine import Engine
from compress.model.blocks import BlockAdapter
from tests.tiny_models import random_llama

GROUP = 16


def ids(n: int = 8, seed: int = 0):
    return torch.randint(0, 256, (n, 32), generator=torch.Generator().manual_seed(seed))


def config(method, pattern, technique, bits="int4", quantizer="gptq", group=GROUP) -> PruneConfig:
    return PruneConfig(
        method=method,
        pattern=pattern,
        calibration=CalibrationConfig(nsamples=8, seqlen=32, batch_size=4),
        reconstruct=ReconstructConfig(technique=technique, epochs=1, lr=1e-3),
        quantize=QuantizeConfig(bits=bits, group_size=group, quantizer=quantizer),
    )


def run(cfg: PruneConfig, layers: int = 2):
    model = random_llama(vocab_size=256, layers=layers)
    outcome = Engine(model, cfg).run(ids())
    return model, outcome


def layers_of(model):
    adapter = BlockAdapter(model)
    return {
        name: m for i in range(len(adapter)) for name, m in adapter.prunable_layers(i, []).items()
    }


def assert_on_grid_with_exact_zeros(model, outcome, grid: QuantGrid):
    layers = layers_of(model)
    assert set(outcome.scales) == set(layers)
    for name, module in layers.items():
        w = module.weight.detach()
        assert torch.equal(w[~outcome.masks[name]], torch.zeros(int((~outcome.masks[name]).sum())))
        scales = outcome.scales[name]
        assert scales.dtype == torch.float16 and scales.shape == (w.shape[0], w.shape[1] // GROUP)
        q = w / grid.expand(scales, w.shape[1])
        assert torch.equal(q, q.round()), name
        assert q.min() >= grid.qmin and q.max() <= grid.qmax, name


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_every_pruner_and_pattern_keeps_zeros_exact_on_the_grid(method, pattern):
    model, outcome = run(config(method, pattern, "lr"))
    assert_on_grid_with_exact_zeros(model, outcome, QuantGrid(4, GROUP))
    joint = method == "sparsegpt"  # rounded inside its own loop under lr
    errors = [layer["quant_error"] for layer in outcome.layers.values()]
    assert all((e is None) == joint for e in errors)
    assert joint or all(0 < e < 0.5 for e in errors)


@pytest.mark.parametrize("technique", ["br+gp", "br+gp+cr", "none"])
def test_rounding_comes_after_reconstruction(technique):
    model, outcome = run(config("wanda", "unstructured", technique, bits="int8"), layers=3)
    assert_on_grid_with_exact_zeros(model, outcome, QuantGrid(8, GROUP))


def test_rtn_is_round_to_nearest_of_the_pruned_weights():
    cfg = config("wanda", "unstructured", "lr", quantizer="rtn")
    pruned, _ = run(config("wanda", "unstructured", "lr", bits="none"))
    model, outcome = run(cfg)
    grid = QuantGrid(4, GROUP)
    # lr with Wanda changes no kept weight, and the first block sees the same inputs: its
    # layers are the pruned weights rounded
    for name, module in layers_of(model).items():
        if ".layers.0." not in name:
            continue
        reference = dict(layers_of(pruned))[name].weight.detach()
        values, scales = round_to_nearest(reference, grid, reference != 0)
        assert torch.equal(module.weight.detach(), values), name
        assert torch.equal(outcome.scales[name], scales), name


def test_gptq_compensates_better_than_rtn():
    """The block outputs of the GPTQ-rounded model stay closer to the unquantized pruned model's
    than round-to-nearest's do."""
    x = ids(4, seed=3)
    plain, _ = run(config("wanda", "unstructured", "lr", bits="none"))
    with torch.no_grad():
        target = plain(x).logits
    errors = {}
    for quantizer in ("rtn", "gptq"):
        model, _ = run(config("wanda", "unstructured", "lr", quantizer=quantizer))
        with torch.no_grad():
            errors[quantizer] = float((model(x).logits - target).norm())
    assert errors["gptq"] < errors["rtn"]
