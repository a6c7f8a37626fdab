"""Meta's checkpoint format converted in a stream: tensor-parallel input shards into transformers'
sharded safetensors, every tensor equal to the transformers folder of the same model."""

from __future__ import annotations

import json

import pytest
import torch

from compress.model.convert_meta import Planned, convert_meta, shard_groups, shard_names
from compress.model.loading import load_model
from tests.meta_format import (
    sentencepiece_model,
    tiny_meta_llama,
    vocab_size,
    write_meta_checkpoint,
)

SHARD_BYTES = 40_000  # the tiny model's ~350 kB in about ten output files


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The original model, its transformers folder, and its conversion from two Meta shards."""
    root = tmp_path_factory.mktemp("convert")
    tokenizer_model = sentencepiece_model()
    model = tiny_meta_llama(vocab_size(tokenizer_model))
    model.save_pretrained(root / "hf")
    meta = write_meta_checkpoint(model, tokenizer_model, root / "meta", shards=2)
    convert_meta(meta, root / "converted", shard_bytes=SHARD_BYTES)
    return model, root / "hf", root / "converted"


def stored_tensors(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


def test_the_output_is_transformers_sharded_layout(folders):
    _, _, converted = folders
    files = sorted(p.name for p in converted.glob("*.safetensors"))
    count = len(files)
    assert count > 2
    assert files == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    sizes = sum(t.numel() * t.element_size() for t in stored_tensors(converted).values())
    assert index["metadata"]["total_size"] == sizes


def test_every_tensor_equals_the_transformers_folders(folders):
    _, direct, converted = folders
    expected, got = stored_tensors(direct), stored_tensors(converted)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


def test_the_converted_model_gives_the_same_logits(folders):
    from transformers import AutoModelForCausalLM

    model, _, converted = folders
    ids = torch.tensor([[1, 5, 9, 17, 33, 60]])
    with torch.no_grad():
        expected = model(ids).logits
        by_transformers = AutoModelForCausalLM.from_pretrained(converted).eval()(ids).logits
        by_compress = load_model(str(converted), dtype="float32").model(ids).logits
    assert torch.equal(by_transformers, expected) and torch.equal(by_compress, expected)


def test_one_output_shard_is_a_single_model_safetensors():
    assert shard_names(1) == ["model.safetensors"]
    assert shard_names(3)[-1] == "model-00003-of-00003.safetensors"


def test_shards_are_cut_in_order_at_the_size_limit():
    sizes = [30, 50, 20, 120, 10, 10]
    entries = [
        Planned(f"t{i}", f"n{i}", None, torch.Size([size]), torch.uint8)
        for i, size in enumerate(sizes)
    ]
    groups = shard_groups(entries, max_bytes=80)
    assert [[e.nbytes for e in group] for group in groups] == [[30, 50], [20], [120], [10, 10]]
