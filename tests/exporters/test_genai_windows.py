"""onnxruntime-genai builds of sliding-window models: every block PyTorch runs through a local
window runs through it in the graph too (Mistral and Phi-3 included, whose configs name no
``layer_types``), the generator's key/value cache holds at least the local window
(GroupQueryAttention refuses a smaller one), and a runtime failure inside the parity check is one
line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli.main import app
from exporters.onnx import OnnxExportConfig, export_onnx
from exporters.onnx.parity import encode_prompts
from tests.compress.test_refusals import refused
from tests.exporters.conftest import prune_and_save
from tests.exporters.test_onnx_export import FAST, PARAGRAPH
from tests.tiny_models import random_model, sliding_window_configs

WINDOW = 8  # fewer than three of the four parity prompts (6 to 20 tokens): tokens leave it
# The blocks PyTorch runs through the window, two blocks per model (transformers 4.57)
LOCAL_BLOCKS = {
    "gemma2": [0],  # alternating, local first
    "gemma3_text": [0, 1],  # five local to one global: both tiny blocks local
    "qwen2": [1],  # global below max_window_layers=1
    "qwen3": [1],
    "mistral": [0, 1],  # every block, with no layer_types in the config
    "phi3": [0, 1],
}


def sliding_dir(tmp_path_factory, tokenizer, family: str) -> Path:
    config = sliding_window_configs(tokenizer.vocab_size, WINDOW)[family]
    folder = tmp_path_factory.mktemp(f"sliding-{family}")
    prune_and_save(random_model(config), tokenizer, folder)
    return folder


def windowed_layers(folder: Path) -> list[int]:
    """The blocks genai_config.json says run a local window of ``WINDOW`` tokens."""
    sliding = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    assert sliding["sliding_window"]["window_size"] == WINDOW
    return sliding["sliding_window"]["layers"]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(sliding_window_configs()))
def test_sliding_window_build_matches_pytorch(family, tokenizer, tmp_path_factory):
    """The parity check's prompts run past the window, so a graph that attends to the whole
    context (main's Mistral and Phi-3 builds) gives other logits than PyTorch."""
    assert max(ids.shape[1] for ids in encode_prompts(tokenizer)) > 2 * WINDOW
    folder = sliding_dir(tmp_path_factory, tokenizer, family)
    output = folder / "genai"
    report = export_onnx(folder, output, OnnxExportConfig(**FAST, runtime="genai"))
    parity = report["parity"]
    assert parity["passed"] and parity["tokens_equal"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["max_abs_decode_logit_diff"] <= 1e-4
    assert windowed_layers(output) == LOCAL_BLOCKS[family]


@pytest.mark.slow
def test_gemma3_int4_build_and_run_onnx(tokenizer, tmp_path_factory):
    """The reported case: a Gemma-3 model (every tiny block local), --quantize int4, then
    run-onnx, which streams exactly the tokens asked for from a cache sized to the window."""
    import torch

    from exporters.onnx.genai import GenaiLM

    folder = sliding_dir(tmp_path_factory, tokenizer, "gemma3_text")
    text = tmp_path_factory.mktemp("text") / "eval.txt"
    text.write_text("\n\n".join(PARAGRAPH.format(i=i, year=1800 + i) for i in range(20)))
    output = folder / "int4"
    args = ["export", "onnx", folder, "--output", output, "--runtime", "genai", "--quantize"]
    args += ["int4", "--eval-source", text, "--eval-windows", 2, "--eval-seqlen", 16]
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    assert windowed_layers(output) == [0, 1]
    ids = torch.tensor([tokenizer("Hello")["input_ids"]])
    assert len(list(GenaiLM(output).stream(ids, 3))) == 3
    result = CliRunner().invoke(app, ["run-onnx", str(output), "Hello", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output


def test_mistral_and_phi3_configs_get_the_layer_types_their_window_needs():
    """What the builder is told (exporters.onnx.builder): every block of a Mistral or Phi-3
    config with a window shorter than its context; nothing where the window drops no token, is
    unset, or the config names its blocks itself."""
    import transformers as tf

    from exporters.onnx.builder import window_layer_types

    configs = sliding_window_configs(window=WINDOW)
    for family, config in configs.items():
        expected = ["sliding_attention"] * 2 if family in ("mistral", "phi3") else None
        assert window_layer_types(config) == expected, family
    as_long = dict(max_position_embeddings=WINDOW, sliding_window=WINDOW, num_hidden_layers=2)
    assert window_layer_types(tf.MistralConfig(**as_long)) is None
    assert window_layer_types(tf.Phi3Config(num_hidden_layers=2)) is None  # sliding_window None
    assert window_layer_types(tf.LlamaConfig()) is None


def test_a_runtime_error_in_the_parity_check_is_one_line(pruned_llama_dir, tmp_path, monkeypatch):
    import exporters.onnx.genai

    class FailingLM:
        def __init__(self, folder: Path):
            pass

        def __call__(self, **_):
            raise RuntimeError("Non-zero status code returned while running GQA\nsecond line")

    monkeypatch.setattr(exporters.onnx.genai, "build", lambda *_: None)
    monkeypatch.setattr(exporters.onnx.genai, "GenaiLM", FailingLM)
    args = ["export", "onnx", pruned_llama_dir, "--output", tmp_path / "out", "--runtime", "genai"]
    refused(args, tmp_path, "parity check", "Non-zero status code returned while running GQA")
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "second line" not in result.stderr


def test_gemma3_rope_by_layer_type_is_flattened_for_the_builder_only():
    """transformers 5 keeps Gemma 3's RoPE per layer type; onnxruntime-genai 0.18's builder
    read it as one flat entry and failed with KeyError: 'rope_type' (the transformers 5 test
    leg). The builder gets a flat copy; the config the model is built from is unchanged."""
    from types import SimpleNamespace

    from exporters.onnx.builder import flat_rope

    nested = {
        "full_attention": {"rope_theta": 1e6, "rope_type": "default"},
        "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"},
    }
    config = SimpleNamespace(rope_parameters=nested)
    flat = flat_rope(config)
    assert flat.rope_parameters == {"rope_theta": 1e6, "rope_type": "default"}
    assert flat.rope_local_base_freq == 1e4
    assert config.rope_parameters is nested and not hasattr(config, "rope_local_base_freq")
    plain = SimpleNamespace(rope_parameters={"rope_theta": 1e4, "rope_type": "default"})
    assert flat_rope(plain) is plain
