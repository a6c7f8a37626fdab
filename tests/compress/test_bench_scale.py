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
