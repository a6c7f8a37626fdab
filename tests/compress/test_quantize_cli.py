"""`compress quantize DIR` and `compress prune --quantize`: the saved folder holds the weights
on their grid with the record beside them, a pruned folder's zeros are kept, and bad grids are
refused in one line before any work."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from compress.algorithms.quant.record import RECORD, integers, read_record
from compress.cli.main import app
from tests.quantized_folders import block_linears
from tests.tiny_models import random_llama

FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, tokenizer):
    """The tiny Llama with every block Linear's smallest half of each row set to zero."""
    folder = tmp_path_factory.mktemp("pruned")
    model = random_llama()
    with torch.no_grad():
        for layer in block_linears(model).values():
            w = layer.weight
            low = w.abs().topk(w.shape[1] // 2, dim=1, largest=False).indices
            w.scatter_(1, low, 0.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def assert_on_grid(folder, bits: int, group: int):
    record = read_record(folder)
    assert record is not None and (record.grid.bits, record.grid.group_size) == (bits, group)
    weights = load_file(folder / "model.safetensors")
    assert set(record.scales) == {n for n in weights if n.startswith("model.layers.")} - {
        n for n in weights if "norm" in n
    }
    for name, scales in record.scales.items():
        integers(weights[name], scales, record.grid, name)  # raises when off the grid
    return record, weights


@pytest.mark.parametrize("quantizer", ["gptq", "rtn"])
def test_quantize_keeps_a_pruned_folders_zeros(pruned_dir, tmp_path, quantizer):
    out = tmp_path / "q"
    args = ["quantize", str(pruned_dir), "--quantizer", quantizer, "--output", str(out), *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record, weights = assert_on_grid(out, 4, 32)
    before = load_file(pruned_dir / "model.safetensors")
    for name in record.scales:
        assert (weights[name][before[name] == 0] == 0).all(), name
        assert not torch.equal(weights[name], before[name]), name
    report = json.loads((out / "report.json").read_text())
    q = report["quantization"]
    assert (q["grid"], q["quantizer"], q["joint"], q["file"]) == ("int4", quantizer, False, RECORD)
    assert q["layers"] == 14 and 0 < q["mean_error"] <= q["max_error"] < 0.5
    assert report["recipe"]["method"] == "none" and report["summary"]["sparsity"] >= 0.5
    assert "int4, groups of 32" in result.output
    card = (out / "README.md").read_text()
    assert "| Quantization | int4 symmetric, groups of 32 input columns, float16 scales" in card
    assert "- quantized\n" in card and "and quantized (int4)" in card
    check = CliRunner().invoke(app, ["card", str(out), "--check"])
    assert check.exit_code == 0, check.output


def test_prune_with_joint_quantization_writes_the_record(tiny_model_dir, tmp_path):
    out = tmp_path / "p"
    args = ["prune", str(tiny_model_dir), "--method", "sparsegpt", "--reconstruct", "lr"]
    args += ["--quantize", "int8", "--output", str(out), *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record, weights = assert_on_grid(out, 8, 32)
    zeros = sum(int((weights[n] == 0).sum()) for n in record.scales)
    assert zeros >= sum(weights[n].numel() for n in record.scales) // 2
    report = json.loads((out / "report.json").read_text())
    assert report["quantization"]["joint"] is True
    assert report["quantization"]["mean_error"] is None
    assert out.name == "p"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--quantize", "int3"], "'int3' is not one of"),
        (["--quantize", "int4", "--group-size", "48"], "does not divide"),
        (["--quantize", "int4", "--group-size", "-1"], "--group-size is -1"),
        (["--method", "none"], "--method none prunes nothing: add --quantize"),
        (["--method", "none", "--quantize", "int4"], "would train them: use --reconstruct lr"),
    ],
)
def test_bad_grids_are_one_line(tiny_model_dir, tmp_path, args, message):
    argv = ["prune", str(tiny_model_dir), "--output", str(tmp_path / "x"), *FAST, *args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_compressed_save_format_of_a_quantized_run_is_pack_quantized(tiny_model_dir, tmp_path):
    """With --quantize, --save-format compressed writes compressed-tensors' pack-quantized
    (current compressed-tensors); a stack without it refuses before pruning, in one line."""
    from compress.core.errors import BadInputError
    from exporters.compressed_quant import require_pack_quantized

    try:
        require_pack_quantized()
        available = True
    except BadInputError:
        available = False
    out = tmp_path / "c"
    args = ["prune", str(tiny_model_dir), "--method", "wanda", "--reconstruct", "lr"]
    args += ["--quantize", "int4", "--save-format", "compressed", "--output", str(out), *FAST]
    result = CliRunner().invoke(app, args)
    if not available:
        assert result.exit_code != 0 and "compressed-tensors" in result.output
        assert "Traceback" not in result.output and not out.exists()
        return
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
