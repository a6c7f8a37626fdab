"""ONNX export of pruned tiny models: parity in ONNX Runtime, int8, the CLI and its failures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import BadInputError, ExportParityError
from compress.core.report import check_section
from exporters.onnx import EXPORT_REPORT, OnnxExportConfig, export_onnx, onnx_artifact
from tests.compress.test_refusals import refused
from tests.stacks import needs_optimum

FAST = dict(max_new_tokens=4, latency_new_tokens=4, latency_repeats=1)
PARAGRAPH = (
    "Paragraph {i}: the river rose after the spring rains, and the town council met in the old "
    "library to decide whether the bridge, built in {year}, could carry another season of carts."
)


@pytest.fixture(scope="module")
def eval_text(tmp_path_factory) -> str:
    """A local .txt source (every tenth paragraph is its test split); the packaged Wikipedia
    dump takes seconds to parse."""
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text("\n\n".join(PARAGRAPH.format(i=i, year=1800 + i) for i in range(20)))
    return str(path)


@pytest.fixture(scope="module")
def llama_export(pruned_llama_dir, eval_text):
    """The pruned Llama exported with past key/values and int8, once for the module."""
    output = pruned_llama_dir / "onnx"
    int8 = dict(quantize="int8", eval_source=eval_text, eval_windows=2, eval_seqlen=16)
    report = export_onnx(pruned_llama_dir, output, OnnxExportConfig(**FAST, **int8))
    return output, report


@pytest.fixture(scope="module")
def gpt2_export(pruned_gpt2_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("gpt2-onnx") / "export"
    return output, export_onnx(pruned_gpt2_dir, output, OnnxExportConfig(**FAST))


@needs_optimum
@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama_export", "gpt2_export"])
def test_parity_and_greedy_tokens(family, request):
    output, report = request.getfixturevalue(family)
    parity = report["parity"]
    assert parity["max_abs_logit_diff"] <= 1e-4
    assert parity["max_abs_decode_logit_diff"] <= 1e-4
    assert parity["tokens_equal"] and parity["mismatches"] == []
    assert parity["passed"] and parity["prompts"] == 4
    assert json.loads((output / EXPORT_REPORT).read_text()) == json.loads(json.dumps(report))
    assert report["task"] == "text-generation-with-past"
    assert (output / "model.onnx").is_file() and (output / "tokenizer.json").is_file()


@needs_optimum
@pytest.mark.slow
def test_export_is_recorded_in_the_model_report(llama_export, pruned_llama_dir):
    _, export = llama_export
    report = json.loads((pruned_llama_dir / "report.json").read_text())
    record = report["artifacts"]["onnx"]
    assert (
        record == onnx_artifact(export, "onnx")
        and check_section("artifacts", {"onnx": record}) == []
    )
    assert record["files"] == export["files"] and record["files"]["model_int8.onnx"] > 0
    assert record["bytes"] == sum(export["files"].values()) and record["parity"]["passed"]
    ppl = export["int8"]["perplexity"]
    assert (record["perplexity"]["before"], record["perplexity"]["after"]) == (
        ppl["fp32"],
        ppl["int8"],
    )
    assert 'subfolder="onnx", file_name="model_int8.onnx"' in record["load"][1]["code"]
    assert "export" not in report


@needs_optimum
@pytest.mark.slow
def test_size_note_counts_the_zeros_it_exported(llama_export, pruned_llama_dir):
    _, report = llama_export
    layers = json.loads((pruned_llama_dir / "report.json").read_text())["layers"]
    pruned_zeros = sum(layer["zeros"] for layer in layers.values())
    size = report["size"]
    assert size["zero_elements"] >= pruned_zeros  # every pruned zero is still stored
    assert size["fp32_bytes"] >= 4 * size["weight_elements"]  # densely, 4 bytes each
    assert "stores every one of them as a dense float" in size["note"]


@needs_optimum
@pytest.mark.slow
def test_int8_is_smaller_and_its_perplexity_is_reported(llama_export):
    _, report = llama_export
    int8 = report["int8"]
    assert int8["bytes"]["int8"] < 0.5 * int8["bytes"]["fp32"]
    ppl = int8["perplexity"]
    assert ppl["windows"] == 2 and ppl["seqlen"] == 16 and ppl["tokens"] == 32
    assert math.isfinite(ppl["fp32"]) and math.isfinite(ppl["int8"])
    assert ppl["change"] == pytest.approx(ppl["int8"] - ppl["fp32"])
    for variant in ("fp32", "int8"):
        latency = int8["latency"][variant]
        assert latency["prefill_ms"] > 0 and latency["tokens_per_second"] > 0
    assert report["files"]["model_int8.onnx"] == int8["bytes"]["int8"]


@needs_optimum
@pytest.mark.slow
def test_weight_only_int8_keeps_activations_float(llama_export, tmp_path):
    import onnx

    from exporters.onnx import load_ort
    from exporters.onnx.quantize import quantize_int8, window_perplexity

    output, report = llama_export
    folder = tmp_path / "weights-only"
    shutil.copytree(output, folder)
    quantize_int8(folder, "int8-weights")
    ops = {node.op_type for node in onnx.load(str(folder / "model_int8.onnx")).graph.node}
    assert "MatMulNBits" in ops and "DynamicQuantizeLinear" not in ops
    windows = torch.randint(0, 49152, (1, 16), generator=torch.Generator().manual_seed(0))
    fp32 = window_perplexity(load_ort(folder), windows)
    int8 = window_perplexity(load_ort(folder, "model_int8.onnx"), windows)
    assert abs(int8 - fp32) / fp32 < 0.05


@needs_optimum
@pytest.mark.slow
def test_parity_miss_raises_and_marks_the_report(
    pruned_llama_dir, eval_text, tmp_path, monkeypatch
):
    """A graph that computes something else (one weight matrix nudged) must fail, not warn."""
    import onnx
    from onnx import numpy_helper
    from optimum.exporters import onnx as optimum_onnx

    real_export = optimum_onnx.main_export

    def export_then_corrupt(model, output, **kwargs):
        real_export(model, output, **kwargs)
        graph = onnx.load(str(output / "model.onnx"))
        init = next(i for i in graph.graph.initializer if len(i.dims) == 2 and i.data_type == 1)
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.05, init.name))
        onnx.save(graph, str(output / "model.onnx"))

    monkeypatch.setattr(optimum_onnx, "main_export", export_then_corrupt)
    output = tmp_path / "bad"
    with pytest.raises(ExportParityError, match="disagrees with PyTorch"):
        config = OnnxExportConfig(**FAST, quantize="int8", eval_source=eval_text)
        export_onnx(pruned_llama_dir, output, config)
    report = json.loads((output / EXPORT_REPORT).read_text())
    assert report["parity"]["passed"] is False
    assert report["parity"]["max_abs_logit_diff"] > 1e-4
    assert "int8" not in report  # nothing is built on a failed export


def test_bad_inputs(tmp_path, pruned_llama_dir):
    with pytest.raises(BadInputError, match="no config.json"):
        export_onnx(tmp_path, tmp_path / "out", OnnxExportConfig())
    with pytest.raises(BadInputError, match="replace the model folder"):
        export_onnx(pruned_llama_dir, pruned_llama_dir, OnnxExportConfig())
    with pytest.raises(BadInputError, match="use int8 or int8-weights or int4"):
        OnnxExportConfig(quantize="int2")
    with pytest.raises(BadInputError, match="--opset"):
        OnnxExportConfig(opset=11)


@needs_optimum
@pytest.mark.slow
def test_cli_export_no_past_then_run(pruned_gpt2_dir, tmp_path):
    runner = CliRunner()
    output = tmp_path / "no-past"
    args = ["export", "onnx", str(pruned_gpt2_dir), "--output", str(output), "--no-past"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "greedy tokens identical" in result.output
    report = json.loads((output / EXPORT_REPORT).read_text())
    assert report["task"] == "text-generation" and report["parity"]["passed"]

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --overwrite" in again.stderr

    result = runner.invoke(app, ["run-onnx", str(output), "Hello", "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


@needs_optimum
@pytest.mark.slow
def test_cli_run_onnx_int8(llama_export):
    output, _ = llama_export
    result = CliRunner().invoke(
        app,
        ["run-onnx", str(output), "The capital of France is", "--max-new-tokens", "3", "--int8"],
    )
    assert result.exit_code == 0, result.output


def prompt_of(tokenizer, tokens: int) -> str:
    """A prompt the tokenizer turns into exactly ``tokens`` ids (special tokens included)."""
    extra = len(tokenizer("a")["input_ids"]) - 1
    prompt = " ".join(["a"] * (tokens - extra))
    assert len(tokenizer(prompt)["input_ids"]) == tokens
    return prompt


@needs_optimum
@pytest.mark.slow
def test_run_onnx_refuses_a_prompt_beyond_the_context(gpt2_export, tokenizer, monkeypatch):
    """The tiny GPT-2 has 256 positions (config.json's n_positions): 252 prompt tokens and 5 new
    ones are refused before the model loads; with 4 new ones they fill the context exactly."""
    import exporters.onnx.optimum

    output, _ = gpt2_export
    prompt = prompt_of(tokenizer, 252)
    with monkeypatch.context() as patch:
        patch.setattr(
            exporters.onnx.optimum, "load_ort", lambda *_: pytest.fail("loaded the model")
        )
        words = ("252 tokens", "5 more", "context of 256", "--max-new-tokens 4")
        refused(["run-onnx", output, prompt, "--max-new-tokens", 5], output, *words)
    result = CliRunner().invoke(app, ["run-onnx", str(output), prompt, "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", "onnx", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no config.json" in result.stderr
    result = runner.invoke(app, ["run-onnx", str(tmp_path), "hi", "--int8"])
    assert result.exit_code == 2 and "--quantize int8" in result.stderr


def test_help_in_a_subprocess():
    code = "from compress.cli.main import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", code, "export", "onnx", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--quantize" in result.stdout and "--no-past" in result.stdout


@pytest.mark.parametrize("command", [["export"], ["run-onnx"], ["card"], ["push"]])
def test_help(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_command_module_loads_no_heavy_library():
    code = (
        "import sys, compress.cli.export\n"
        "heavy = {'torch', 'transformers', 'optimum', 'onnxruntime'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_auto_runtime_is_optimum_where_installed_else_genai(monkeypatch):
    import exporters.onnx.config

    monkeypatch.setattr(exporters.onnx.config, "optimum_installed", lambda: True)
    assert OnnxExportConfig().route == "optimum"
    monkeypatch.setattr(exporters.onnx.config, "optimum_installed", lambda: False)
    assert OnnxExportConfig().route == "genai"
    assert OnnxExportConfig(quantize="int4").route == "genai"
    assert OnnxExportConfig(quantize="int8").route == "optimum"  # only optimum writes int8
    assert OnnxExportConfig(runtime="optimum").route == "optimum"


@pytest.mark.parametrize("args", [["--runtime", "optimum"], ["--quantize", "int8"]])
def test_optimum_route_without_optimum_onnx_is_one_line(args, pruned_llama_dir, monkeypatch):
    """Where optimum-onnx cannot be installed (transformers 5), the line names the extra and
    the transformers it needs, and the route that works."""
    import exporters.onnx.config

    monkeypatch.setattr(exporters.onnx.config, "optimum_installed", lambda: False)
    out = pruned_llama_dir.parent / "never-written"
    args = ["export", "onnx", str(pruned_llama_dir), "--output", str(out), *args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "compress[legacy-onnx]" in lines[0] and "transformers>=4.57,<4.58" in lines[0]
    assert "--runtime genai" in lines[0] and not out.exists()
