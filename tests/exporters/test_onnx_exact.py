"""ONNX int4/int8 exports of a quantized folder hold its recorded integers and scales, bit for
bit, in MatMulNBits (optimum route: the fp32 graph rewritten; genai route: the model builder
fed a GPTQ checkpoint of them), and compute what PyTorch computes on the folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from compress.algorithms.quant.grid import QuantGrid, round_to_nearest
from compress.algorithms.quant.record import QuantRecord, write_record
from compress.core.errors import BadInputError
from exporters.onnx import OnnxExportConfig, export_onnx, onnx_artifact
from exporters.onnx.exact import ACCURACY_LEVEL, nbits_weights, pack, unpack
from tests.quantized_folders import save_quantized
from tests.stacks import needs_optimum
from tests.tiny_models import random_llama

FAST = dict(max_new_tokens=6, latency_new_tokens=2, latency_repeats=1)
PROJECTIONS = {"qkv_proj": ("q_proj", "k_proj", "v_proj")}  # the builder fuses q, k and v


def _eval(text_file) -> dict:
    return dict(eval_source=str(text_file), eval_windows=1, eval_seqlen=16)


@pytest.fixture(scope="module")
def eval_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: the river rose after rain." for i in range(40)))
    return path


@pytest.fixture(scope="module", params=[(4, 32), (8, 16)], ids=["int4", "int8"])
def quantized_dir(request, tmp_path_factory, tokenizer):
    bits, group = request.param
    folder = tmp_path_factory.mktemp(f"int{bits}")
    save_quantized(random_llama(), folder, QuantGrid(bits, group), tokenizer)
    return folder, bits


def _quantize_flag(bits: int) -> str:
    return "int4" if bits == 4 else "int8-weights"


def _folder_weight(weights: dict, node_name: str) -> torch.Tensor:
    """The folder's weight (or q, k, v stacked) a MatMulNBits node computes with."""
    parts = node_name.strip("/").split("/")[:-1]  # model, layers.0, attn|self_attn, q_proj
    section = {"attn": "self_attn"}.get(parts[2], parts[2])
    stem = ".".join([*parts[:2], section])
    names = PROJECTIONS.get(parts[3], (parts[3],))
    return torch.cat([weights[f"{stem}.{name}.weight"] for name in names])


def assert_holds_the_folder(graph_file, folder, bits: int) -> None:
    """Every recorded weight is a MatMulNBits whose (q - zero point) * scale equals it bit for
    bit; nothing else is a MatMulNBits (the head and embedding stay float)."""
    import onnx

    weights = load_file(str(folder / "model.safetensors"))
    found = nbits_weights(onnx.load(str(graph_file)))
    covered = 0
    for name, (q, scales, node_bits, block) in found.items():
        value = q.astype(np.float32) * np.repeat(scales, block, axis=1)
        expected = _folder_weight(weights, name)
        assert node_bits == bits and np.array_equal(value, expected.numpy()), name
        covered += expected.shape[0]
    recorded = [w for n, w in weights.items() if ".layers." in n and w.dim() == 2]
    assert covered == sum(w.shape[0] for w in recorded)  # every recorded row, once


def test_packing_is_what_matmulnbits_computes_with():
    """One MatMulNBits node over our packing: x @ (q * scale).T, in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    for bits, block in ((4, 16), (8, 32)):
        w = torch.randn(24, 64)
        values, scales = round_to_nearest(w, QuantGrid(bits, block))
        q = torch.round(values / scales.float().repeat_interleave(block, 1)).to(torch.int8)
        packed = pack(q, bits, block)
        assert np.array_equal(unpack(packed, bits, 64), q.numpy())
        node = helper.make_node(
            "MatMulNBits", ["x", "B", "s"], ["y"], domain="com.microsoft",
            K=64, N=24, bits=bits, block_size=block, accuracy_level=ACCURACY_LEVEL,
        )  # fmt: skip
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 24])],
            [
                numpy_helper.from_array(packed, "B"),
                numpy_helper.from_array(scales.float().numpy().reshape(-1), "s"),
            ],
        )
        opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        x = torch.randn(3, 64)
        (y,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(y, (x @ values.T).numpy(), rtol=1e-5, atol=1e-5)


def _record_only(folder, tmp_path, grid: QuantGrid):
    """A copy of ``folder`` whose record claims ``grid`` (the refusals read only the grid)."""
    copy = tmp_path / f"g{grid.group_size}"
    shutil.copytree(folder, copy)
    write_record(copy, QuantRecord(grid, "rtn", {}))
    return copy


@pytest.mark.parametrize(
    "grid, quantize, runtime, words",
    [
        (QuantGrid(4, 24), "int4", "auto", ("group size of 24", "power of two >= 16")),
        (QuantGrid(4, 0), "int4", "genai", ("one scale per output row", "--group-size 32")),
        (QuantGrid(4, 32), "int8-weights", "auto", ("holds int4", "use --quantize int4")),
        (QuantGrid(8, 32), "int4", "genai", ("holds int8", "use --quantize int8-weights")),
        (QuantGrid(4, 32), "int8", "auto", ("would round them again",)),
    ],
)
def test_what_the_record_cannot_give_is_refused_in_one_line(
    tiny_model_dir, tmp_path, grid, quantize, runtime, words
):
    folder = _record_only(tiny_model_dir, tmp_path, grid)
    output = tmp_path / "out"
    with pytest.raises(BadInputError) as error:
        export_onnx(folder, output, OnnxExportConfig(quantize=quantize, runtime=runtime))
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert not output.exists()


def test_genai_int8_weights_needs_an_int8_record(tiny_model_dir, tmp_path):
    with pytest.raises(BadInputError, match="int8-weights only from a folder quantized to int8"):
        export_onnx(
            tiny_model_dir,
            tmp_path / "o",
            OnnxExportConfig(quantize="int8-weights", runtime="genai"),
        )


@needs_optimum
@pytest.mark.slow
def test_optimum_graph_holds_the_folders_integers(quantized_dir, eval_text, tmp_path):
    folder, bits = quantized_dir
    output = tmp_path / "onnx"
    config = OnnxExportConfig(**FAST, quantize=_quantize_flag(bits), **_eval(eval_text))
    report = export_onnx(folder, output, config)
    tag = "int4" if bits == 4 else "int8"
    graph = report[tag]
    assert_holds_the_folder(output / graph["file"], folder, bits)
    parity = graph["parity"]  # judged as strictly as the fp32 graph: same weights
    assert parity["passed"] and parity["tokens_equal"] and not parity["quantized"]
    assert parity["atol"] == config.exact_atol and graph["block_size"] == (32 if bits == 4 else 16)
    assert graph["method"].startswith(f"int{bits} (exact: the model's grid)")
    assert onnx_artifact(report, str(output))["details"]["method"] == graph["method"]
    from exporters.onnx.summary import summary_lines

    assert f"{tag} weights: {graph['method']}" in summary_lines(report, output)


@pytest.mark.slow
def test_genai_build_holds_the_folders_integers(quantized_dir, eval_text, tmp_path):
    folder, bits = quantized_dir
    output = tmp_path / "genai"
    config = OnnxExportConfig(
        **FAST, runtime="genai", quantize=_quantize_flag(bits), **_eval(eval_text)
    )
    report = export_onnx(folder, output, config)
    assert_holds_the_folder(output / "model.onnx", folder, bits)
    parity = report["parity"]
    assert parity["passed"] and parity["tokens_equal"] and not parity["quantized"]
    assert report["precision"] == f"int{bits}" and report["algorithm"] == "exact"
    assert "exact" in report["method"] and np.isfinite(report["perplexity"][f"int{bits}"])
    assert not (output / ".checkpoint").exists()
    assert onnx_artifact(report, str(output))["details"]["method"] == report["method"]
    from exporters.onnx.summary import genai_lines

    assert f"int{bits} weights: {report['method']}" in genai_lines(report, output)


def test_the_exact_build_is_planned_on_what_the_builder_reads(quantized_dir):
    """The checkpoint a 7B-shaped int4 folder becomes (~3.3 GB packed blocks, ~1 GB float32
    embedding and head) is planned within 24 GiB, where the float builds are refused; a folder
    without a record is never told to use the exact build."""
    from exporters.onnx.exact import checkpoint_bytes
    from exporters.onnx.fit import GIB, check_fits

    folder, bits = quantized_dir
    weights = load_file(str(folder / "model.safetensors"))
    recorded = sum(w.numel() for n, w in weights.items() if ".layers." in n and w.dim() == 2)
    floats = sum(w.numel() for w in weights.values()) - recorded
    from compress.algorithms.quant.record import read_record

    assert checkpoint_bytes(folder, read_record(folder)) == floats * 4 + recorded * bits // 8
    check_fits("genai", "exact", int(4.3 * GIB), 24 * GIB)
    with pytest.raises(BadInputError) as error:
        check_fits("genai", "int4", 27 * GIB, 24 * GIB)
    assert "quantized folder" not in str(error.value)
