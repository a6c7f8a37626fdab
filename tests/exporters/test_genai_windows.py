"""onnxruntime-genai builds of sliding-window models: the generator's key/value cache holds at
least the local window (GroupQueryAttention refuses a smaller one), and a runtime failure inside
the parity check is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli.main import app
from exporters.onnx import OnnxExportConfig, export_onnx
from tests.compress.test_refusals import refused
from tests.exporters.conftest import prune_and_save
from tests.exporters.test_onnx_export import FAST, PARAGRAPH
from tests.tiny_models import random_model, sliding_window_configs

WINDOW = 32  # more than the parity prompts (up to 20 tokens) and their new tokens


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
    folder = sliding_dir(tmp_path_factory, tokenizer, family)
    output = folder / "genai"
    report = export_onnx(folder, output, OnnxExportConfig(**FAST, runtime="genai"))
    parity = report["parity"]
    assert parity["passed"] and parity["tokens_equal"]
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["max_abs_decode_logit_diff"] <= 1e-4
    assert windowed_layers(output)  # the builder kept the window: the old cache was too small


@pytest.mark.slow
def test_gemma3_int4_build_and_run_onnx(tokenizer, tmp_path_factory):
    """The reported case: a Gemma-3 model (every tiny block local), --quantize int4, then
    run-onnx, which streams exactly the tokens asked for from a cache sized to the window."""
    import torch

    from exporters.genai import GenaiLM

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


def test_a_runtime_error_in_the_parity_check_is_one_line(pruned_llama_dir, tmp_path, monkeypatch):
    import exporters.genai

    class FailingLM:
        def __init__(self, folder: Path):
            pass

        def __call__(self, **_):
            raise RuntimeError("Non-zero status code returned while running GQA\nsecond line")

    monkeypatch.setattr(exporters.genai, "build", lambda *_: None)
    monkeypatch.setattr(exporters.genai, "GenaiLM", FailingLM)
    args = ["export", "onnx", pruned_llama_dir, "--output", tmp_path / "out", "--runtime", "genai"]
    refused(args, tmp_path, "parity check", "Non-zero status code returned while running GQA")
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "second line" not in result.stderr
