"""benchmarks/peer_gptq.py reads compressed-tensors' pack-quantized layout back exactly.

The packed words are built here from the layout's definition (signed q + 8, element i of a row
at bits 4i of its int32 stream, lowest first); the two literals are what compressed-tensors
0.19's ``pack_to_int32`` gives for q = -8..7 and for a zero point [1, -2, 3] packed along rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peer_gptq.py"


@pytest.fixture(scope="module")
def peer_gptq():
    spec = importlib.util.spec_from_file_location("peer_gptq", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_gptq"] = module
    spec.loader.exec_module(module)
    return module


def pack4(q: torch.Tensor) -> torch.Tensor:
    """Rows of int4 values packed as compressed-tensors does, one Python int per word."""
    rows = []
    for row in q.tolist():
        words = [0] * ((len(row) + 7) // 8)
        for i, value in enumerate(row):
            words[i // 8] |= (value + 8) << (4 * (i % 8))
        rows.append([w - (1 << 32) if w >= 1 << 31 else w for w in words])
    return torch.tensor(rows, dtype=torch.int32)


def test_the_nibble_order_is_compressed_tensors(peer_gptq):
    assert pack4(torch.arange(-8, 8).reshape(1, 16)).tolist() == [[1985229328, -19088744]]
    words = torch.tensor([[1985229328, -19088744]], dtype=torch.int32)
    assert peer_gptq.unpack_int32(words, 4, 16).tolist() == [list(range(-8, 8))]
    zero_point = torch.tensor([[2921]], dtype=torch.int32)  # [1, -2, 3] packed along dim 0
    assert peer_gptq.unpack_int32(zero_point.t(), 4, 3).t().tolist() == [[1], [-2], [3]]


def test_a_packed_folder_reads_back_to_its_integers_times_scales(peer_gptq, tmp_path):
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    rows, columns, group = 6, 96, 32
    q = torch.randint(-8, 8, (rows, columns), generator=generator)
    scale = torch.rand(rows, columns // group, generator=generator) + 0.1
    embed = torch.randn(10, columns, generator=generator)
    save_file(
        {
            "layer.weight_packed": pack4(q),
            "layer.weight_scale": scale,
            "layer.weight_shape": torch.tensor([rows, columns]),
            "embed.weight": embed,
        },
        tmp_path / "model.safetensors",
    )
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group"}
    groups = {"group_0": {"weights": weights | {"group_size": group}, "targets": ["Linear"]}}
    quantization = {"format": "pack-quantized", "config_groups": groups}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": quantization}))

    dense = peer_gptq.read_pack_quantized(tmp_path)

    assert list(dense) == ["layer.weight"]  # the dense tensors are the model's own
    expected = q.float() * scale.repeat_interleave(group, dim=1)
    assert torch.equal(dense["layer.weight"], expected)
    model = torch.nn.ModuleDict({"layer": torch.nn.Linear(columns, rows, bias=False)})
    assert peer_gptq.load_pack_quantized(model, tmp_path) == ["layer.weight"]
    assert torch.equal(model["layer"].weight, expected)
    model = torch.nn.ModuleDict({"layer": torch.nn.Linear(columns, rows + 1, bias=False)})
    with pytest.raises(peer_gptq.BadInputError, match="layer.weight"):
        peer_gptq.load_pack_quantized(model, tmp_path)
