"""Every supported family: capture, replay, prune, save and reload."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from compress.blocks import SUPPORTED_MODEL_TYPES, BlockAdapter
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import prune_model
from tests.tiny_models import family_configs, fused_weights, random_model, skip_fused

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
    skip_fused(model, model_type)
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
    """Every 2-D block weight is pruned; fused 3-D expert tensors are refused in one line."""
    model = build(model_type)
    ids = torch.randint(0, 256, (4, 16))
    if fused_weights(model):
        with pytest.raises(BadInputError, match=r"experts would stay dense.*transformers 4\.57"):
            prune_model(model, ids, WANDA)
        assert all((p != 0).all() for p in model.parameters() if p.ndim > 2)
        return
    outcome = prune_model(model, ids, WANDA)
    adapter = BlockAdapter(model)
    matrices = {
        f"{adapter.block_name(i)}.{name.removesuffix('.weight')}"
        for i, block in enumerate(adapter.blocks)
        for name, p in block.named_parameters()
        if p.ndim == 2 and name.endswith(".weight")
    }
    assert matrices <= set(outcome.layers)


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
    """Recording every block's call costs no block computation past block 0 (issue 17: it was
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
