"""Every supported family: capture, replay, prune, save and reload."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import prune_model
from compress.model.blocks import SUPPORTED_MODEL_TYPES, BlockAdapter, is_prunable
from tests.tiny_models import expert_matrices, family_configs, random_model

FAMILIES = family_configs()


def test_all_supported_families_tested():
    assert set(FAMILIES) == set(SUPPORTED_MODEL_TYPES)


def build(model_type: str):
    return random_model(FAMILIES[model_type])


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_replayed_blocks_match_model(model_type):
    model = build(model_type)
    adapter = BlockAdapter(model)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        hidden, calls = adapter.capture([ids, ids[:1]])
        reference = model(input_ids=ids, output_hidden_states=True).hidden_states
        state = hidden[0]
        for index in range(len(adapter) - 1):  # the last entry is after the final norm
            state = adapter.run_block(index, state, calls[0][index])
            torch.testing.assert_close(state, reference[index + 1])
        single = adapter.run_block(0, hidden[1], calls[1][0])
    torch.testing.assert_close(single, reference[1][:1])


WANDA = PruneConfig(
    method="wanda",
    calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
    reconstruct=ReconstructConfig(technique="lr"),
)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_pruned_family_runs_and_reloads(model_type, tmp_path):
    model = build(model_type)
    ids = torch.randint(0, 256, (4, 16))
    outcome = prune_model(model, ids, WANDA)
    assert outcome.layers and all(entry["sparsity"] == 0.5 for entry in outcome.layers.values())
    head = model.get_output_embeddings().weight
    assert (head == 0).float().mean() < 0.01  # the LM head is never pruned
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        actual = reloaded(input_ids=ids).logits
    assert torch.isfinite(actual).all()
    assert torch.equal(expected, actual)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_no_expert_is_left_dense_silently(model_type):
    """Every block Linear is pruned, and so is every expert, stored as Linears (transformers
    4.57) or fused into 3-D tensors (transformers 5, unfused while pruning: compress.model.moe)."""
    model = build(model_type)
    ids = torch.randint(0, 256, (4, 16))
    outcome = prune_model(model, ids, WANDA)
    adapter = BlockAdapter(model)
    linears = {
        f"{adapter.block_name(i)}.{name}"
        for i, block in enumerate(adapter.blocks)
        for name, module in block.named_modules()
        if is_prunable(module)
    }
    assert linears <= set(outcome.layers)
    for name, weight in expert_matrices(model).items():
        assert name in outcome.layers
        assert (weight == 0).float().mean() == 0.5, name


def test_other_fused_weights_are_refused_in_one_line():
    """A >2-D block weight outside an experts module compress can unfuse stays refused."""
    model = build("llama")
    block = model.model.layers[0]
    block.mlp.stacked = torch.nn.Parameter(torch.ones(2, 4, 4))
    with pytest.raises(BadInputError, match=r"mlp\.stacked.*would stay dense"):
        prune_model(model, torch.randint(0, 256, (4, 16)), WANDA)
    assert (block.mlp.stacked != 0).all()


def test_skip_and_layer_override():
    model = build("llama")
    config = PruneConfig(
        method="magnitude",
        skip=["*.mlp.down_proj"],
        layer_sparsity={"*.self_attn.*": 0.25},
        calibration=CalibrationConfig(nsamples=2, seqlen=8),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    outcome = prune_model(model, torch.randint(0, 256, (2, 8)), config)
    assert not any(name.endswith("down_proj") for name in outcome.layers)
    assert (model.model.layers[0].mlp.down_proj.weight != 0).all()
    assert outcome.layers["model.layers.1.self_attn.q_proj"]["sparsity"] == 0.25
    assert outcome.layers["model.layers.1.mlp.up_proj"]["sparsity"] == 0.5


def test_sequential_inputs_come_from_pruned_blocks():
    """Block 1's statistics must see block 0's *pruned* output."""
    model = build("llama")
    ids = torch.randint(0, 256, (2, 8))
    adapter = BlockAdapter(model)
    seen = []
    layer = model.model.layers[1].self_attn.q_proj
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    config = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=2, seqlen=8, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    prune_model(model, ids, config)
    handle.remove()
    with torch.no_grad():  # recompute block 1's q_proj input with the pruned block 0
        hidden, calls = adapter.capture([ids])
        out0 = adapter.run_block(0, hidden[0], calls[0][0])
        expected = model.model.layers[1].input_layernorm(out0)
    torch.testing.assert_close(seen[0], expected)  # the statistics pass, the first to run it


def deeper(model_type: str, layers: int = 4):
    """The family's tiny model with ``layers`` blocks (gemma's layer types derived again)."""
    fields = FAMILIES[model_type].to_dict()
    fields.pop("layer_types", None)
    fields["n_layer" if model_type == "gpt2" else "num_hidden_layers"] = layers
    return random_model(type(FAMILIES[model_type])(**fields))


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_capture_computes_only_the_first_block(model_type):
    """Recording every block's call costs no block computation past block 0 (it was
    half a forward over the calibration set); the calls still replay the model exactly."""
    model = deeper(model_type)
    adapter = BlockAdapter(model)
    ran: list[int] = []
    handles = [
        module.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
        for i, block in enumerate(adapter.blocks)
        for module in adapter.prunable_layers(i).values()
    ]
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        hidden, calls = adapter.capture([ids, ids])
        assert set(ran) == {0} and len(calls[0]) == len(adapter) == 4
        reference = model(input_ids=ids, output_hidden_states=True).hidden_states
        state = hidden[1]
        for index in range(len(adapter) - 1):
            state = adapter.run_block(index, state, calls[1][index])
            torch.testing.assert_close(state, reference[index + 1])
    assert set(ran) == {0, 1, 2, 3}  # the blocks compute again after the capture
    for handle in handles:
        handle.remove()
