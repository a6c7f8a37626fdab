"""Saving in one read of the weights: an offloaded model is streamed into the very files
``save_pretrained`` writes for it in memory, its zeros counted and NaN/Inf refused on the way."""

from __future__ import annotations

import pytest
import torch

from compress.core.errors import NumericsError
from compress.model.placement import Placement, dispatch, offload_stores, save_model
from compress.model.placement import save as save_module
from tests.tiny_models import DISK_MAP, random_llama


def fresh(dtype: torch.dtype = torch.float32):
    model = random_llama(vocab_size=1000).to(dtype)
    with torch.no_grad():  # some zeros to count, in RAM (block 0) and on disk (block 1)
        for block in model.model.layers:
            block.mlp.down_proj.weight[:, ::3] = 0
    return model


def offloaded(tmp_path, dtype: torch.dtype = torch.float32):
    model = dispatch(fresh(dtype), Placement(DISK_MAP, offload_folder=str(tmp_path / "offload")))
    assert model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    return model


def files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def zeros_in_ram(model) -> tuple[int, int]:
    parameters = list(model.parameters())
    return sum(int((p == 0).sum()) for p in parameters), sum(p.numel() for p in parameters)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_offloaded_model_is_saved_byte_for_byte_as_in_memory(tmp_path, dtype):
    fresh(dtype).save_pretrained(tmp_path / "ram", safe_serialization=True)
    tally = save_model(offloaded(tmp_path, dtype), tmp_path / "streamed")
    assert files(tmp_path / "streamed") == files(tmp_path / "ram")
    zeros, parameters = zeros_in_ram(fresh(dtype))
    assert (tally.zeros, tally.parameters) == (zeros, parameters)
    assert tally.sparsity == zeros / parameters > 0


def test_shards_and_index_match_save_pretrained(tmp_path, monkeypatch):
    """At a shard size the tiny model exceeds: the same shard files and the same index."""
    monkeypatch.setattr(save_module, "_shard_size", lambda model: "200KB")
    fresh().save_pretrained(tmp_path / "ram", safe_serialization=True, max_shard_size="200KB")
    save_model(offloaded(tmp_path), tmp_path / "streamed")
    written = files(tmp_path / "streamed")
    assert save_module.INDEX_NAME in written and len(written) > 4
    assert written == files(tmp_path / "ram")


def test_the_in_memory_model_is_written_by_save_pretrained_and_counted(tmp_path):
    model = fresh()
    tally = save_model(model, tmp_path / "saved")
    model.save_pretrained(tmp_path / "ram", safe_serialization=True)
    assert files(tmp_path / "saved") == files(tmp_path / "ram")
    assert (tally.zeros, tally.parameters) == zeros_in_ram(model)


def test_a_nan_in_an_offloaded_weight_is_refused_naming_it(tmp_path):
    model = offloaded(tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    weights_map, key = offload_stores(model)[name]
    poisoned = weights_map[key].clone()
    poisoned[0, 1] = float("nan")
    model.model.layers[1].mlp.down_proj._hf_hook.weights_map.dataset.state_dict[
        weights_map.prefix + key
    ] = poisoned
    with pytest.raises(NumericsError, match=rf"^{name} holds 1 NaN or Inf value"):
        save_model(model, tmp_path / "streamed")


def test_a_nan_in_memory_is_refused_before_anything_is_written(tmp_path):
    model = fresh()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[2, 2] = float("inf")
    with pytest.raises(NumericsError, match=r"^model.layers.0.self_attn.q_proj.weight holds 1"):
        save_model(model, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
