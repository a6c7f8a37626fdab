"""--one-pass: one forward per block, each layer calibrated on the pruned layers before it."""

import pytest
import torch

from compress.algorithms.pruners import PRUNERS
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.engine import prune_model
from compress.model.blocks import BlockAdapter, weight_view
from tests.tiny_models import family_configs, random_llama, random_model

IDS = torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(0))


def config(method: str, one_pass: bool, technique: str = "lr", pattern: str = "unstructured"):
    return PruneConfig(
        method=method,
        pattern=pattern,
        one_pass=one_pass,
        calibration=CalibrationConfig(nsamples=6, seqlen=16, batch_size=4),
        reconstruct=ReconstructConfig(technique=technique, epochs=1, measure_errors=False),
    )


def layer_calls(model) -> tuple[dict[str, int], list]:
    """Counts of every prunable layer's forwards, and the hooks' handles."""
    adapter = BlockAdapter(model)
    counts: dict[str, int] = {}
    handles = []
    for i in range(len(adapter)):
        for name, module in adapter.prunable_layers(i).items():
            counts[name] = 0

            def hook(m, args, name=name):
                counts[name] += 1

            handles.append(module.register_forward_pre_hook(hook))
    return counts, handles


@pytest.mark.parametrize("one_pass", [True, False])
def test_one_pass_runs_each_layer_once(one_pass):
    model = random_llama(vocab_size=256, layers=3)
    counts, handles = layer_calls(model)
    outcome = prune_model(model, IDS, config("wanda", one_pass))
    for handle in handles:
        handle.remove()
    # capture computes block 0 once per batch shape (6 rows: one batch, or 4 + 2), then
    # one forward of one batch per block, or two of two batches
    per_layer, captured = (1, 1) if one_pass else (4, 2)
    for name, count in counts.items():
        assert count == per_layer + captured * name.startswith("model.layers.0."), name
    assert {block["passes"] for block in outcome.blocks} == {1 if one_pass else 2}


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_each_layer_is_pruned_from_the_inputs_of_the_pruned_model(method, pattern):
    """The promise: every layer's mask (and SparseGPT's update) is what its pruner makes of
    the inputs that layer receives in the finished, pruned model."""
    model = random_llama(vocab_size=256, layers=3)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = prune_model(model, IDS, config(method, True, pattern=pattern))
    adapter = BlockAdapter(model)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(
            lambda m, args, name=name: inputs.setdefault(name, args[0])
        )
        for i in range(len(adapter))
        for name, module in adapter.prunable_layers(i).items()
    ]
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    for handle in handles:
        handle.remove()
    for name, x in inputs.items():
        weight = dense[name + ".weight"].clone()
        pruner = PRUNERS[method](weight, name)
        pruner.add_batch(x)
        mask = pruner.prune(0.5, config(method, True, pattern=pattern).parsed_pattern).mask
        assert torch.equal(mask, outcome.masks[name]), name
        torch.testing.assert_close(weight, weight_view(model.get_submodule(name)))


def test_first_group_matches_two_passes_and_quality_is_close():
    """Block 0's q/k/v see the same (dense) input either way: identical masks."""
    masks = {}
    for one_pass in (True, False):
        model = random_llama(vocab_size=256, layers=3)
        masks[one_pass] = prune_model(model, IDS, config("sparsegpt", one_pass)).masks
    for proj in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.0.self_attn.{proj}"
        assert torch.equal(masks[True][name], masks[False][name])
    assert list(masks[True]) == list(masks[False])  # report order: the blocks' layer order
    later = "model.layers.0.mlp.down_proj"
    assert not torch.equal(masks[True][later], masks[False][later])


@pytest.mark.parametrize("technique", ["br", "none"])
def test_one_pass_falls_back_where_it_does_not_apply(technique):
    """Training needs the dense block's targets: two passes; ``none`` runs in one."""
    model = random_llama(vocab_size=256, layers=2)
    outcome = prune_model(model, IDS, config("wanda", True, technique))
    assert {block["passes"] for block in outcome.blocks} == {2 if technique == "br" else 1}


@pytest.mark.parametrize("model_type", sorted(family_configs()))
def test_one_pass_prunes_every_family(model_type):
    """Every family (fused and split projections, GPT-2's Conv1D, routed experts some of which
    may see no token) gets every layer pruned in one pass."""
    model = random_model(family_configs()[model_type])
    outcome = prune_model(model, IDS, config("sparsegpt", True))
    assert {block["passes"] for block in outcome.blocks} == {1}
    assert outcome.layers and all(entry["sparsity"] == 0.5 for entry in outcome.layers.values())
