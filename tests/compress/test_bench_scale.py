"""benchmarks/scale_7b.py on its 2-block miniature: the folder it builds is a loadable sharded
checkpoint, and the flow writes its table and JSON (the 7B run is the same code at another shape)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_7b.py"


@pytest.mark.slow
def test_the_miniature_flow_prints_the_table_and_writes_the_json(tmp_path):
    output = tmp_path / "scale.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--blocks", "2", "--skip-peer"]
    command += ["--nsamples", "4", "--seqlen", "32", "--methods", "wanda", "--patterns", "2:4"]
    command += ["--cache", str(tmp_path / "cache"), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "load average before" in done.stdout and "load average after" in done.stdout
    result = json.loads(output.read_text())
    stages = [row["stage"] for row in result["rows"]]
    assert stages == ["build (random bf16 weights)", "prune wanda 2:4"]
    pruned = result["rows"][1]
    assert pruned["seconds"] > pruned["prune_seconds"] > 0 and pruned["peak_rss_bytes"] > 0
    assert pruned["sparsity"] == 0.5 and pruned["disk_bytes"] > 0
    assert "prune wanda 2:4" in done.stdout.splitlines()[-2]


def test_the_built_folder_is_a_sharded_llama_with_seeded_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(SCRIPT.parent))
    import scale_7b

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        scale_7b.build_folder(folder, scale_7b.SHAPE_TINY, blocks=2, seed=0)
    shards = sorted(p.name for p in first.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    model = AutoModelForCausalLM.from_pretrained(first)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    again = AutoModelForCausalLM.from_pretrained(second).state_dict()
    for name, tensor in model.state_dict().items():
        assert tensor.dtype.is_floating_point and tensor.equal(again[name]), name
    assert model.model.layers[1].mlp.down_proj.weight.shape == (64, 172)


@pytest.mark.slow
def test_the_meta_stage_converts_back_to_the_folders_weights(tmp_path):
    output = tmp_path / "scale.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--blocks", "2", "--meta", "--no-prune"]
    command += ["--cache", str(tmp_path / "cache"), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(output.read_text())["rows"]
    stages = [row["stage"] for row in rows]
    assert stages == ["build (random bf16 weights)", "write Meta format", "convert Meta format"]
    written, converted = rows[1], rows[2]
    assert written["peak_rss_bytes"] > 0 and written["disk_bytes"] > converted["shard_bytes"] > 0
    assert converted["weights_equal"] is True and converted["seconds"] > 0
    ratio = converted["peak_rss_bytes"] / converted["shard_bytes"]
    assert converted["x_shard_rss"] == pytest.approx(ratio)
    assert "weights equal: True" in done.stdout.splitlines()[-2]


def test_the_streaming_meta_writer_writes_what_the_tests_writer_writes(tmp_path):
    """benchmarks/meta_checkpoint.py, tensor by tensor from a saved folder, against
    tests/meta_format.py's in-memory inverse of the conversion, in two tensor-parallel shards."""
    import torch

    from tests.meta_format import sentencepiece_model, tiny_meta_llama, vocab_size
    from tests.meta_format import write_meta_checkpoint as write_in_memory

    sys.path.insert(0, str(SCRIPT.parent))
    import meta_checkpoint

    tokenizer_model = sentencepiece_model()
    model = tiny_meta_llama(vocab_size(tokenizer_model))
    model.save_pretrained(tmp_path / "hf")
    write_in_memory(model, tokenizer_model, tmp_path / "expected", shards=2)
    meta_checkpoint.write_meta_checkpoint(tmp_path / "hf", tmp_path / "got", tokenizer_model, 2)
    for rank in range(2):
        name = f"consolidated.{rank:02d}.pth"
        expected = torch.load(tmp_path / "expected" / name, weights_only=True)
        got = torch.load(tmp_path / "got" / name, weights_only=True)
        assert got.keys() == expected.keys()
        for key, tensor in expected.items():
            if key != "rope.freqs":  # a placeholder there; the real frequencies here
                assert torch.equal(got[key], tensor), key


def test_the_weights_check_finds_one_changed_tensor(tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(SCRIPT.parent))
    import meta_checkpoint
    import scale_7b

    scale_7b.build_folder(tmp_path / "a", scale_7b.SHAPE_TINY, blocks=1, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert meta_checkpoint.same_weights(tmp_path / "a", tmp_path / "b")["equal"]
    file = tmp_path / "b" / "model-00001-of-00002.safetensors"
    tensors = load_file(file)
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][3, 5] += 1
    save_file(tensors, file, metadata={"format": "pt"})
    check = meta_checkpoint.same_weights(tmp_path / "a", tmp_path / "b")
    assert not check["equal"] and check["unequal"] == [name]
