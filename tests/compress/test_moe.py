"""transformers 5's fused MoE experts, unfused into one Linear per expert projection while
compress prunes them (compress/model/moe.py), on either transformers stack."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.engine import prune_model
from compress.finetune import sparsity_masks
from compress.finetune.training import count_zeros
from compress.model.moe import UnfusedExperts, is_fused_experts, unfused_experts
from compress.model.placement import Placement, dispatch
from tests.tiny_models import expert_matrices, family_configs, random_model

EXPERTS, HIDDEN, INNER = 4, 64, 128  # the tiny Mixtral's widths


class Fused(nn.Module):
    """The fused layout with no library behind it (what transformers 5 stores)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(EXPERTS, 2 * INNER, HIDDEN))
        self.down_proj = nn.Parameter(torch.randn(EXPERTS, HIDDEN, INNER))
        self.act_fn = nn.SiLU()


def routed(tokens: int, top_k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states, top-k expert indices (expert 3 never chosen) and their weights."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, HIDDEN, generator=generator)
    scores = torch.rand(tokens, EXPERTS - 1, generator=generator)
    weights, index = scores.topk(top_k, dim=-1)
    return hidden, index, weights / weights.sum(-1, keepdim=True)


def reference(fused: Fused, hidden, index, weights) -> torch.Tensor:
    """The fused computation, expert by expert, with F.linear on the 3-D tensors' slices,
    each expert's tokens summed in in transformers' order (by top-k slot, then token)."""
    out = torch.zeros_like(hidden)
    for e in range(EXPERTS):
        k, token = torch.where(index.T == e)
        gate, up = F.linear(hidden[token], fused.gate_up_proj[e]).chunk(2, dim=-1)
        state = F.linear(fused.act_fn(gate) * up, fused.down_proj[e]) * weights[token, k, None]
        out.index_add_(0, token, state)
    return out


@torch.no_grad()
def test_unfused_forward_equals_fused_bit_for_bit():
    """At these widths; at tiny ones (16 x 8) CPU matmul kernels may round one (2I, H)
    product and two (I, H) ones differently in the last bit."""
    torch.manual_seed(0)
    fused = Fused()
    assert is_fused_experts(fused)
    inputs = routed(32)
    assert torch.equal(UnfusedExperts(fused)(*inputs), reference(fused, *inputs))


def test_expert_linears_are_views_written_back_after_moves():
    """Writing an expert Linear writes the fused tensor; a dtype move on the way (block
    training runs float32 copies) still ends in the fused tensor on leaving."""
    torch.manual_seed(0)
    holder = nn.Sequential(Fused())
    fused = holder[0]
    with unfused_experts(holder):
        unfused = holder[0]
        assert isinstance(unfused, UnfusedExperts) and len(list(unfused.children())) == EXPERTS + 1
        with torch.no_grad():
            unfused.expert(1).up_proj.weight.zero_()
        assert (fused.gate_up_proj[1, INNER:] == 0).all() and (
            fused.gate_up_proj[1, :INNER] != 0
        ).all()
        holder.double()
        with torch.no_grad():
            unfused.expert(2).down_proj.weight.fill_(3.0)
        assert (fused.down_proj[2] != 3.0).all()  # no longer a view
    assert holder[0] is fused and fused.down_proj.dtype == torch.float32
    assert (fused.down_proj[2] == 3.0).all() and (fused.gate_up_proj[1, INNER:] == 0).all()


def test_originals_come_back_on_error():
    holder = nn.Sequential(Fused())
    fused = holder[0]
    with pytest.raises(RuntimeError, match="boom"), unfused_experts(holder):
        raise RuntimeError("boom")
    assert holder[0] is fused


def mixtral(experts: int = 4):
    fields = family_configs()["mixtral"].to_dict()
    fields.update(num_local_experts=experts, num_experts_per_tok=2)
    return random_model(type(family_configs()["mixtral"])(**fields))


@pytest.mark.parametrize("implementation", ["eager", "grouped_mm"])
@torch.no_grad()
def test_unfused_mixtral_equals_the_library_bit_for_bit(implementation):
    """transformers 5's own experts forward (as configured) and the unfused one agree."""
    model = mixtral()
    if not any(map(is_fused_experts, model.modules())):
        pytest.skip("this transformers keeps a Linear per expert (nothing fused to compare)")
    model.config._experts_implementation = implementation
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    expected = model(input_ids=ids).logits
    with unfused_experts(model):
        assert not any(map(is_fused_experts, model.modules()))
        actual = model(input_ids=ids).logits
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruned_mixtral_zeroes_half_of_every_expert(method):
    """Either stack: every expert's every projection ends exactly half zeros, in the tensors
    the model keeps (the fused ones under transformers 5), and the model is fused again."""
    model = mixtral()
    kinds = {type(m) for m in model.modules()}
    config = PruneConfig(
        method=method,
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    outcome = prune_model(model, torch.randint(0, 256, (4, 16)), config)
    assert {type(m) for m in model.modules()} == kinds
    matrices = expert_matrices(model)
    assert len(matrices) == 2 * 4 * 3  # blocks x experts x projections
    for name, weight in matrices.items():
        assert outcome.layers[name]["sparsity"] == 0.5
        assert (weight == 0).float().mean() == 0.5, name


def test_finetune_masks_hold_every_pruned_expert():
    """Fine-tuning keeps the experts sparse: its masks cover every zero the pruning left."""
    model = mixtral()
    config = PruneConfig(
        method="magnitude",
        calibration=CalibrationConfig(nsamples=2, seqlen=8),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    outcome = prune_model(model, torch.randint(0, 256, (2, 8)), config)
    masks = sparsity_masks(model)
    assert count_zeros(masks) == sum(entry["zeros"] for entry in outcome.layers.values())


def test_mixtral_pruned_offloaded_to_disk_equals_plain_cpu(tmp_path):
    """A block waiting on disk (meta parameters) is unfused once onloaded: the same weights as
    a plain CPU run, trained (float32 copies of the Linears on the way) and written back to
    the offload folder."""
    config = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="br", epochs=1),
    )
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    plain = mixtral()
    prune_model(plain, ids, config)
    cpu = ("model.embed_tokens", "model.rotary_emb", "model.layers.0", "model.norm", "lm_head")
    device_map = dict.fromkeys(cpu, "cpu") | {"model.layers.1": "disk"}
    offloaded = dispatch(mixtral(), Placement(device_map, offload_folder=str(tmp_path / "off")))
    assert all(p.device.type == "meta" for p in offloaded.model.layers[1].parameters())
    prune_model(offloaded, ids, config)
    offloaded.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    got = reloaded.state_dict()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for name, weight in expert_matrices(reloaded).items():
        assert (weight == 0).float().mean() == 0.5, name


def test_mixtral_with_a_profile_and_cross_block_windows():
    """The profile's first pass and two-block windows see every expert too."""
    model = mixtral()
    config = PruneConfig(
        method="wanda",
        sparsity_profile="owl",
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="br+gp+cr", epochs=1),
    )
    outcome = prune_model(model, torch.randint(0, 256, (4, 16)), config)
    matrices = expert_matrices(model)
    assert set(matrices) <= set(outcome.layers)
    for name, weight in matrices.items():
        assert (weight == 0).any(), name
        assert outcome.layers[name]["zeros"] == int((weight == 0).sum()), name


def test_block_training_trains_the_experts():
    """Reconstruction (BR) moves block 0's routed experts' kept weights, the fused ones too
    (block 0: its masks do not depend on the technique, so only training moves them)."""
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    weights = {}
    for technique in ("lr", "br"):
        model = mixtral()
        config = PruneConfig(
            method="wanda",
            calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
            reconstruct=ReconstructConfig(technique=technique, epochs=2, lr=1e-3),
        )
        prune_model(model, ids, config)
        weights[technique] = {
            k: v.detach().clone()
            for k, v in expert_matrices(model).items()
            if k.startswith("model.layers.0.")
        }
    moved = [name for name, w in weights["br"].items() if not torch.equal(w, weights["lr"][name])]
    assert len(moved) >= len(weights["br"]) // 2, moved  # experts no token reaches stay put
