"""Deploying the sparsity: int4 ONNX, a tied embedding stored once, onnxruntime-genai builds
and their generator, and the 2:4 GPU benchmark's refusal on a CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.report import check_section
from exporters.onnx import EXPORT_REPORT, OnnxExportConfig, export_onnx, onnx_artifact
from tests.compress.test_refusals import refused
from tests.exporters.test_onnx_export import FAST, prompt_of
from tests.stacks import needs_optimum

VOCAB, HIDDEN = 256, 64


def tied_graph(head: np.ndarray):
    """input_ids -> Gather(embedding) -> Identity ``embedded``; x @ head -> ``logits``: the
    shape of a torch export whose tied head was written as its own ``(H, V)`` copy."""
    from onnx import TensorProto, helper, numpy_helper

    embedding = np.random.default_rng(0).standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["gathered"]),
        helper.make_node("Identity", ["gathered"], ["embedded"]),
        helper.make_node("MatMul", ["x", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "T"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", HIDDEN]),
        ],
        [
            helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [1, "T", HIDDEN]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "T", VOCAB]),
        ],
        [numpy_helper.from_array(embedding, "embed"), numpy_helper.from_array(head, "head")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, embedding


def run(model, ids: np.ndarray, x: np.ndarray):
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString())
    return session.run(["embedded", "logits"], {"input_ids": ids, "x": x})


INPUTS = (
    np.array([[3, 17, 255, 0]], dtype=np.int64),
    np.random.default_rng(1).standard_normal((1, 4, HIDDEN)).astype(np.float32),
)


def tied_copy_graph(scale: float = 1.0):
    """:func:`tied_graph` with the head a copy of the embedding transposed (times ``scale``)."""
    from onnx import numpy_helper

    model, embedding = tied_graph(np.zeros((HIDDEN, VOCAB), np.float32))
    head = numpy_helper.from_array(embedding.T.copy() * scale, "head")
    model.graph.initializer[1].CopyFrom(head)
    return model, embedding


def test_tied_head_copy_is_replaced_by_a_transpose():
    from exporters.onnx.tied import share_float

    model, _ = tied_copy_graph()
    before = run(model, *INPUTS)
    size = model.ByteSize()
    assert share_float(model) == VOCAB * HIDDEN * 4
    assert [i.name for i in model.graph.initializer] == ["embed"]
    assert size - model.ByteSize() > 0.99 * VOCAB * HIDDEN * 4  # less the Transpose node
    for got, expected in zip(run(model, *INPUTS), before, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_untied_head_is_left_alone():
    from exporters.onnx.tied import share_float

    head = np.random.default_rng(2).standard_normal((HIDDEN, VOCAB)).astype(np.float32)
    model, _ = tied_graph(head)
    assert share_float(model) == 0
    assert len(model.graph.initializer) == 2


@pytest.mark.parametrize("tied", [True, False])
def test_int4_embedding_reads_the_heads_blocks(tied):
    """After 4-bit packing, a tied embedding becomes GatherBlockQuantized over the head's blocks
    and looks up exactly the weights the head computes with; an untied one stays float."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from exporters.onnx.tied import materialise_head, share_float, share_quantized

    model, embedding = tied_copy_graph(1.0 if tied else 1.5)
    share_float(model)
    materialise_head(model)  # the quantizer needs an initializer B
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True)
    quantizer.process()
    quantized = quantizer.model.model
    removed = share_quantized(quantized)
    ops = [node.op_type for node in quantized.graph.node]
    names = [init.name for init in quantized.graph.initializer]
    if not tied:
        assert removed == 0 and "GatherBlockQuantized" not in ops and "embed" in names
        return
    assert removed == VOCAB * HIDDEN * 4
    assert "GatherBlockQuantized" in ops and "embed" not in names
    embedded, _ = run(quantized, *INPUTS)
    # the rows the head multiplies with: logits of one-hot inputs through the MatMulNBits
    eye = np.eye(HIDDEN, dtype=np.float32)[None]
    _, head_rows = run(quantized, INPUTS[0], eye)  # (1, H, V): column v is row v dequantized
    np.testing.assert_allclose(embedded[0], head_rows[0].T[INPUTS[0][0]], atol=1e-6)
    assert np.abs(embedded[0] - embedding[INPUTS[0][0]]).max() < 0.5


def test_new_config_choices_are_checked():
    with pytest.raises(BadInputError, match="--runtime genai builds fp32 or int4"):
        OnnxExportConfig(runtime="genai", quantize="int8")
    with pytest.raises(BadInputError, match="--block-size 48"):
        OnnxExportConfig(quantize="int4", block_size=48)
    with pytest.raises(BadInputError, match="--runtime 'tvm'"):
        OnnxExportConfig(runtime="tvm")


@pytest.fixture(scope="module")
def eval_text(tmp_path_factory) -> str:
    from tests.exporters.test_onnx_export import PARAGRAPH

    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text("\n\n".join(PARAGRAPH.format(i=i, year=1800 + i) for i in range(20)))
    return str(path)


def _eval(eval_text: str) -> dict:
    return dict(eval_source=eval_text, eval_windows=2, eval_seqlen=16)


@needs_optimum
@pytest.mark.slow
def test_int4_export_is_checked_and_stores_the_embedding_once(
    pruned_llama_dir, eval_text, tmp_path
):
    import onnx

    output = tmp_path / "int4"
    config = OnnxExportConfig(**FAST, quantize="int4", **_eval(eval_text))
    report = export_onnx(pruned_llama_dir, output, config)
    int4 = report["int4"]
    assert int4["block_size"] == 32 and int4["file"] == "model_int4.onnx"
    assert int4["bytes"]["int4"] < 0.25 * int4["bytes"]["fp32"]  # one 4-bit copy of 49152 x 64
    assert int4["parity"]["passed"] and int4["parity"]["atol"] == config.int4_atol
    assert int4["parity"]["quantized"] and int4["parity"]["max_abs_logit_diff"] > 0
    assert 0 < int4["parity"]["mean_abs_logit_diff"] <= config.int4_atol
    ppl = int4["perplexity"]
    assert np.isfinite(ppl["int4"]) and ppl["change"] == pytest.approx(ppl["int4"] - ppl["fp32"])
    graph = onnx.load(str(output / "model_int4.onnx")).graph
    assert "GatherBlockQuantized" in {node.op_type for node in graph.node}
    floats = [i for i in graph.initializer if i.data_type == 1 and list(i.dims) == [49152, 64]]
    assert floats == []
    assert json.loads((output / EXPORT_REPORT).read_text())["files"]["model_int4.onnx"] > 0

    result = CliRunner().invoke(
        app, ["run-onnx", str(output), "Hello", "--int4", "--max-new-tokens", "3"]
    )
    assert result.exit_code == 0, result.output


@needs_optimum  # --quantize int4 with the default runtime: the optimum graph quantized
@pytest.mark.slow
def test_export_onnx_prints_the_int4_graphs_figures(pruned_llama_dir, eval_text, tmp_path):
    output = tmp_path / "int4-cli"
    args = ["export", "onnx", str(pruned_llama_dir), "--output", str(output), "--quantize", "int4"]
    args += ["--block-size", "16", "--eval-source", eval_text, "--eval-windows", "2"]
    result = CliRunner().invoke(app, [*args, "--eval-seqlen", "16"])
    assert result.exit_code == 0, result.output
    int4 = json.loads((output / EXPORT_REPORT).read_text())["int4"]
    size = int4["bytes"]["int4"] / 2**20
    assert f"int4 (blocks of 16): {size:.1f} MiB" in result.output
    assert f"int4 perplexity on {eval_text}" in result.output
    assert "int4 vs PyTorch: mean |logit diff|" in result.output


@pytest.fixture(scope="module")
def genai_llama(pruned_llama_dir, tmp_path_factory):
    """The pruned Llama built by onnxruntime-genai's model builder (fp32), once for the module."""
    output = tmp_path_factory.mktemp("genai") / "export"
    return output, export_onnx(pruned_llama_dir, output, OnnxExportConfig(**FAST, runtime="genai"))


@pytest.mark.slow
def test_genai_fp32_build_matches_pytorch_and_streams(genai_llama):
    output, report = genai_llama
    parity = report["parity"]
    assert report["runtime"] == "onnxruntime-genai" and report["precision"] == "fp32"
    assert parity["passed"] and parity["tokens_equal"] and parity["mismatches"] == []
    assert parity["max_abs_logit_diff"] <= 1e-4 and parity["max_abs_decode_logit_diff"] <= 1e-4
    assert (output / "genai_config.json").is_file()
    assert (output / "model.onnx.data").is_file()  # every weight outside the graph: no 2 GB limit

    from exporters.onnx.genai import stream_text

    prompt = "The capital of France is"
    pieces = list(stream_text(output, prompt, 6))
    assert len(pieces) >= 1 and "".join(pieces)
    result = CliRunner().invoke(app, ["run-onnx", str(output), prompt, "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert result.output == "".join(pieces) + "\n"  # the same greedy text, streamed


@pytest.mark.slow
def test_genai_run_onnx_refuses_a_prompt_beyond_the_context(genai_llama, tokenizer, monkeypatch):
    """genai_config.json records a context of 256 (the tiny Llama's positions): 252 prompt
    tokens and 5 new ones are refused before the model loads; 4 new ones fill it exactly."""
    import exporters.onnx.genai

    output, _ = genai_llama
    assert json.loads((output / "genai_config.json").read_text())["model"]["context_length"] == 256
    prompt = prompt_of(tokenizer, 252)
    with monkeypatch.context() as patch:
        patch.setattr(exporters.onnx.genai, "GenaiLM", lambda *_: pytest.fail("loaded the model"))
        words = ("252 tokens", "5 more", "context of 256", "--max-new-tokens 4")
        refused(["run-onnx", output, prompt, "--max-new-tokens", 5], output, *words)
    result = CliRunner().invoke(app, ["run-onnx", str(output), prompt, "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_genai_int4_build_records_parity_and_perplexity(pruned_llama_dir, eval_text, tmp_path):
    output = tmp_path / "genai-int4"
    config = OnnxExportConfig(**FAST, runtime="genai", quantize="int4", **_eval(eval_text))
    report = export_onnx(pruned_llama_dir, output, config)
    assert report["precision"] == "int4" and report["parity"]["passed"]
    assert 0 < report["parity"]["mean_abs_logit_diff"] <= config.int4_atol
    ppl = report["perplexity"]
    assert np.isfinite(ppl["int4"]) and np.isfinite(ppl["pytorch_fp32"])
    assert report["algorithm"] == "k_quant"
    layers = 2  # the tiny Llama's blocks: each one's qkv and down projections got 8 bits
    assert report["int8_projections"] == ["qkv_proj", "down_proj", "lm_head"]
    assert report["int8_matmuls"] == {"qkv_proj": layers, "down_proj": layers, "lm_head": 1}
    # the tied head in int8, stored once: about 0.3 of one fp32 copy
    assert report["files"]["model.onnx"] < 0.35 * 4 * 49152 * 64
    record = json.loads((pruned_llama_dir / "report.json").read_text())["artifacts"]["onnx-genai"]
    assert record == onnx_artifact(report, str(output))  # outside the folder: its absolute path
    assert check_section("artifacts", {"onnx-genai": record}) == []
    assert record["perplexity"]["after"] == ppl["int4"] and record["details"]["precision"] == "int4"
    assert f'og.Model("{output}")' in record["load"][0]["code"]


def test_genai_run_onnx_needs_a_genai_folder(tmp_path):
    from exporters.onnx.genai import stream_text

    with pytest.raises(BadInputError, match="--runtime genai"):
        next(stream_text(tmp_path, "hi", 2))


def test_bench_sparse_refuses_on_a_cpu_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["bench-sparse", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "needs a CUDA GPU" in result.stderr


def test_only_true_2_4_linears_are_swappable():
    from exporters.sparse24 import is_24, swappable

    linear = torch.nn.Linear(64, 64, bias=False)
    assert not swappable(linear)
    with torch.no_grad():
        linear.weight.view(64, 16, 4)[..., :2] = 0
    assert is_24(linear.weight) and swappable(linear)
    with torch.no_grad():
        linear.weight[0, 0] = 1.0  # one group now keeps three
    assert not is_24(linear.weight)
    assert not swappable(torch.nn.Linear(8, 8))


def test_quantized_parity_is_judged_on_the_mean():
    from exporters.onnx.parity import ParityResult

    common = dict(prompts=1, prompt_tokens=4, max_new_tokens=2, mismatches=[{"prompt": 0}])
    result = ParityResult(
        atol=4.0,
        max_abs_logit_diff=16.0,
        max_abs_decode_logit_diff=12.0,
        tokens_equal=False,
        mean_abs_logit_diff=2.3,
        quantized=True,
        **common,
    )
    assert result.passed  # rounding: a large max and flipped tokens, a small mean
    result.mean_abs_logit_diff = 4.5
    assert not result.passed
    result.quantized, result.mean_abs_logit_diff = False, 0.0
    assert not result.passed  # fp32 keeps the strict max and token checks


@needs_optimum
@pytest.mark.slow
def test_export_stores_a_duplicated_tied_head_once(pruned_llama_dir, tmp_path, monkeypatch):
    """optimum sometimes writes the tied head as its own (H, V) copy (SmolLM2-135M: 652.5 MB
    instead of 539.3 MB); the export must share it again and still match PyTorch."""
    import onnx
    from onnx import numpy_helper
    from optimum.exporters import onnx as optimum_onnx

    from exporters.onnx.tied import find_pair

    real_export = optimum_onnx.main_export

    def export_with_a_copy(model, output, **kwargs):
        real_export(model, output, **kwargs)
        graph = onnx.load(str(output / "model.onnx"))
        pair = find_pair(graph)
        table = next(i for i in graph.graph.initializer if i.name == pair.embedding)
        copy = numpy_helper.from_array(numpy_helper.to_array(table).T.copy(), "head_copy")
        graph.graph.initializer.append(copy)
        pair.matmul.input[1] = "head_copy"
        onnx.save(graph, str(output / "model.onnx"))

    monkeypatch.setattr(optimum_onnx, "main_export", export_with_a_copy)
    report = export_onnx(pruned_llama_dir, tmp_path / "shared", OnnxExportConfig(**FAST))
    tied = report["tied_embedding"]
    assert tied["shared"] and report["parity"]["passed"]
    assert tied["bytes_before"] - tied["bytes_after"] > 0.99 * 49152 * 64 * 4
    assert report["files"]["model.onnx"] == tied["bytes_after"]


def test_genai_sessions_get_the_thread_count_of_the_other_runtimes(monkeypatch, tmp_path):
    """onnxruntime-genai's default is every core; timings beside torch and optimum (which use
    torch's thread count) must give it the same number."""
    import sys
    import types

    from exporters.onnx.genai import session_config

    overlays = []

    class Config:
        def __init__(self, path):
            self.path = path

        def overlay(self, text):
            overlays.append(json.loads(text))

    monkeypatch.setitem(sys.modules, "onnxruntime_genai", types.SimpleNamespace(Config=Config))
    config = session_config(tmp_path, 3)
    assert config.path == str(tmp_path)
    assert overlays == [{"model": {"decoder": {"session_options": {"intra_op_num_threads": 3}}}}]


def test_gpu_benchmark_script_refuses_on_a_cpu_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "sparse24_gpu.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: bench-sparse needs")


def _eight_bit(config: dict) -> list:
    return [entry["match"] for entry in config["quant_config"]["weights"]["overrides"]]


@pytest.mark.parametrize(
    ("options", "method", "block", "eight_bit"),
    [
        (  # the defaults
            {},
            "k_quant",
            32,
            [
                {"name": "/model/layers.0/attn/qkv_proj/MatMul"},
                {"name": "/model/layers.0/mlp/down_proj/MatMul"},
                {"name": "/model/layers.1/attn/qkv_proj/MatMul"},
                {"name": "/model/layers.1/mlp/down_proj/MatMul"},
                {"preset": "last_matmul"},
            ],
        ),
        (
            {"block_size": 16, "genai_algo": "rtn", "genai_int8": "none"},
            "rtn",
            16,
            [],
        ),
        (  # the builder's compound algorithm: its base method and its own 8-bit presets
            {"genai_algo": "k_quant_mixed", "genai_int8": "o_proj"},
            "k_quant",
            32,
            [
                {"name": "/model/layers.0/attn/o_proj/MatMul"},
                {"name": "/model/layers.1/attn/o_proj/MatMul"},
                {"preset": "last_matmul"},
                {"preset": "mixed_layers"},
            ],
        ),
    ],
)
def test_genai_int4_options_reach_the_model_builder(
    options, method, block, eight_bit, pruned_llama_dir, tmp_path, monkeypatch
):
    import subprocess

    folder = pruned_llama_dir  # a real folder: the genai route reads its config before building
    commands = []

    def builder(command, **_):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "stopped here by the test")

    monkeypatch.setattr(subprocess, "run", builder)
    config = OnnxExportConfig(runtime="genai", quantize="int4", **options)
    with pytest.raises(BadInputError, match="stopped here by the test"):
        export_onnx(folder, tmp_path / "out", config)
    (command,) = commands
    assert command[command.index("-p") + 1] == "int4"
    quant = json.loads(command[command.index("--target_options") + 1])
    weights = quant["quant_config"]["weights"]
    assert (weights["type"], weights["method"], weights["block_size"]) == ("int4", method, block)
    assert _eight_bit(quant) == eight_bit
    assert all(entry["type"] == "int8" for entry in weights["overrides"])
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"genai_int8": "qkv_proj,wq"}, "--genai-int8 wq is not a projection"),
        ({"genai_algo": "default"}, "--genai-algo default cannot keep lm_head at 8 bits"),
    ],
)
def test_genai_int8_choices_are_checked(options, message):
    with pytest.raises(BadInputError, match=message):
        OnnxExportConfig(runtime="genai", quantize="int4", **options)


def test_a_projection_the_builder_did_not_keep_at_eight_bits_is_refused(tmp_path):
    import onnx
    from onnx import helper

    from exporters.onnx.genai_quant import check_eight_bit

    def matmul(name: str, bits: int):
        return helper.make_node(
            "MatMulNBits", ["x", "b"], ["y"], name=name, domain="com.microsoft", bits=bits
        )

    nodes = [
        matmul("/model/layers.0/attn/qkv_proj/MatMul_Q8", 8),
        matmul("/model/layers.1/attn/qkv_proj/MatMul_Q8", 8),
        matmul("/model/layers.0/mlp/down_proj/MatMul_Q8", 8),
        matmul("/model/layers.1/mlp/down_proj/MatMul_Q4", 4),
        matmul("/lm_head/MatMul_Q8", 8),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    counts = check_eight_bit(tmp_path, ("qkv_proj", "lm_head"), layers=2)
    assert counts == {"qkv_proj": 2, "down_proj": 1, "lm_head": 1}
    with pytest.raises(BadInputError, match="--genai-int8 down_proj: the builder's graph has 1"):
        check_eight_bit(tmp_path, ("qkv_proj", "down_proj"), layers=2)
