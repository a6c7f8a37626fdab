"""Sibling layers (same input tensor) share one set of statistics; results do not change."""

import pytest
import torch

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners import PRUNERS
from compress.algorithms.pruners.sparsegpt import column_loop_threads
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.methods import SparseGPTOptions
from compress.engine import prune_model
from compress.model import blocks
from compress.model.blocks import BlockAdapter, is_prunable
from compress.model.moe import unfused_experts
from tests.tiny_models import family_configs, random_model

FAMILIES = family_configs()
WITH_SIBLINGS = sorted(name for name, groups in blocks.SIBLINGS.items() if groups)


def test_every_family_declares_siblings():
    assert set(blocks.SIBLINGS) == set(blocks.SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_declared_siblings_are_the_layers_reading_one_tensor(model_type):
    """The table equals the grouping by identity of the input tensors the layers receive."""
    model = random_model(FAMILIES[model_type])
    with unfused_experts(model):  # transformers 5's fused experts, as compress prunes them
        check_siblings(model)


def check_siblings(model) -> None:
    adapter = BlockAdapter(model)
    layers = adapter.prunable_layers(0)
    inputs: dict[str, torch.Tensor] = {}
    modules = {id(module): name for name, module in layers.items()}
    handles = [
        module.register_forward_pre_hook(lambda m, args: inputs.setdefault(modules[id(m)], args[0]))
        for module in layers.values()
        if is_prunable(module)
    ]
    with torch.no_grad():
        model(input_ids=torch.randint(0, 256, (4, 16)))
    for handle in handles:
        handle.remove()
    by_tensor: dict[int, list[str]] = {}
    for name in layers:
        if name in inputs:
            by_tensor.setdefault(id(inputs[name]), []).append(name)
    derived = sorted(sorted(group) for group in by_tensor.values())
    declared = sorted(
        sorted(g) for g in adapter.sibling_groups(0, [n for n in layers if n in inputs])
    )
    assert declared == derived


def prune(model_type: str, method: str, pattern: str, monkeypatch, share: bool):
    if not share:
        monkeypatch.setattr(blocks, "SIBLINGS", {name: () for name in blocks.SIBLINGS})
    model = random_model(FAMILIES[model_type])
    config = PruneConfig(
        method=method,
        pattern=pattern,
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    outcome = prune_model(model, ids, config)
    monkeypatch.undo()
    return outcome.masks, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("model_type", WITH_SIBLINGS)
def test_shared_statistics_equal_unshared(model_type, method, pattern, monkeypatch):
    shared_masks, shared_weights = prune(model_type, method, pattern, monkeypatch, True)
    masks, weights = prune(model_type, method, pattern, monkeypatch, False)
    assert shared_masks.keys() == masks.keys()
    for name in masks:
        assert torch.equal(shared_masks[name], masks[name]), name
    for name in weights:
        assert torch.equal(shared_weights[name], weights[name]), name


def test_siblings_feed_one_set_of_statistics(monkeypatch):
    """q/k/v and gate/up: the statistics are accumulated once per group (5 of 7 layers)."""
    fed = []
    cls = PRUNERS["sparsegpt"]
    original = cls.add_batch
    monkeypatch.setattr(
        cls, "add_batch", lambda self, x: (fed.append(self.name), original(self, x))
    )
    prune("llama", "sparsegpt", "unstructured", monkeypatch, True)
    block0 = sorted({name for name in fed if name.startswith("model.layers.0.")})
    assert [name.rsplit(".", 1)[-1] for name in block0] == [
        "down_proj",
        "gate_proj",
        "o_proj",
        "q_proj",
    ]


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_prunes_siblings_in_one_loop_as_one_by_one(pattern):
    """q/k/v-like siblings of 24, 8 and 8 rows on one Hessian, each to its own sparsity: one
    column loop over their stacked rows gives each layer the masks and (within float rounding)
    the weights of its own loop; each layer's seconds are its rows' share of the loop's."""
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(rows, 64, generator=g) for rows in (24, 8, 8)]
    inputs = torch.randn(4, 32, 64, generator=g)
    sparsities, parsed = [0.5, 0.6, 0.5], SparsityPattern.parse(pattern)
    cls = PRUNERS["sparsegpt"]

    def siblings():
        pruners = [
            cls(w.clone(), f"layer{k}", SparseGPTOptions(blocksize=16))
            for k, w in enumerate(weights)
        ]
        pruners[0].add_batch(inputs)
        for pruner in pruners[1:]:
            pruner.share(pruners[0])
        return pruners

    together = siblings()
    results = cls.prune_group(together, sparsities, parsed)
    alone = siblings()
    for pruner, sparsity, result, joint in zip(alone, sparsities, results, together):
        expected = pruner.prune(sparsity, parsed)
        assert torch.equal(result.mask, expected.mask), pruner.name
        torch.testing.assert_close(joint.weight, pruner.weight, rtol=1e-5, atol=1e-6)
        assert joint.weight[~result.mask].eq(0).all()
    if pattern == "unstructured":  # each layer's own share, not the stack's
        kept = [r.mask.float().mean().item() for r in results]  # rounded per 16-column block
        assert [1 - k for k in kept] == pytest.approx(sparsities, abs=0.01)
    shares = [r.seconds / sum(x.seconds for x in results) for r in results]
    assert shares == pytest.approx([0.6, 0.2, 0.2])


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_does_not_depend_on_thread_count(pattern):
    torch.manual_seed(0)
    weight = torch.randn(96, 128)
    inputs = torch.randn(4, 32, 128)
    results = []
    threads = torch.get_num_threads()
    for count in (1, 2, 4):
        torch.set_num_threads(count)
        try:
            pruner = PRUNERS["sparsegpt"](weight.clone(), "layer", SparseGPTOptions(blocksize=32))
            pruner.add_batch(inputs)
            mask = pruner.prune(0.5, SparsityPattern.parse(pattern)).mask
        finally:
            torch.set_num_threads(threads)
        results.append((mask, pruner.weight))
    for mask, pruned in results[1:]:
        assert torch.equal(mask, results[0][0])
        torch.testing.assert_close(pruned, results[0][1], rtol=1e-4, atol=1e-5)  # float32 rounding


@pytest.mark.parametrize(
    ("cores", "load", "allowed", "expected"),
    [(2, 1.0, 2, 2), (2, 0.2, 2, 2), (2, 6.0, 2, 1), (16, 4.0, 16, 13), (16, 1.0, 8, 8)],
)
def test_column_loop_threads_rule(cores, load, allowed, expected):
    assert column_loop_threads(cores, load, allowed) == expected
