"""compressed-tensors pack-quantized: a quantized folder exported with the package's own
compressor, loaded back by transformers 5 with every block Linear, the logits and the zeros
equal to the folder's; the scale dtype's consequences per model dtype; refusals in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from compress.algorithms.quant.grid import QuantGrid
from compress.algorithms.quant.record import QuantRecord, read_record, write_record
from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from compress.core.report import check_section
from exporters import compressed, compressed_quant
from tests.exporters.conftest import minimal_report
from tests.quantized_folders import block_linears, save_quantized
from tests.stacks import legacy
from tests.tiny_models import random_llama


def has_pack_quantized() -> bool:
    try:
        compressed_quant.require_pack_quantized()
    except BadInputError:
        return False
    return True


needs_pack = pytest.mark.skipif(
    not has_pack_quantized(),
    reason="needs compressed-tensors>=0.15 (the transformers 5 stack); 0.14 is the legacy sparse one",
)
runner = CliRunner()
TEXT = "Quantized weights, the same logits."


def quantized_folder(folder, tokenizer, grid: QuantGrid, dtype=torch.float32, model=None):
    """A random tiny Llama (or ``model``), half of each block Linear pruned and the rest rounded
    to ``grid``, saved in ``dtype`` with its record and a report."""
    model = (model or random_llama(vocab_size=tokenizer.vocab_size)).to(dtype)
    save_quantized(model, folder, grid, tokenizer)
    layers = {}
    for name, layer in block_linears(model).items():
        zeros, numel = int((layer.weight == 0).sum()), layer.weight.numel()
        layers[name] = {
            "shape": list(layer.weight.shape),
            "target_sparsity": 0.5,
            "sparsity": zeros / numel,
            "zeros": zeros,
            "numel": numel,
            "seconds": 0.001,
        }
    write_json_atomic(folder / "report.json", minimal_report(model, layers, 0.5))
    return folder


def reference(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()


def logits(model, tokenizer):
    tokens = torch.tensor([tokenizer(TEXT).input_ids])
    with torch.no_grad():
        return model(tokens).logits


def differing_linears(loaded, dense) -> list[str]:
    """Block Linears whose weight (dtype or bits) differs between the two models."""
    theirs = dict(loaded.named_modules())
    return [
        name
        for name, layer in block_linears(dense).items()
        if theirs[name].weight.dtype != layer.weight.dtype
        or not torch.equal(theirs[name].weight, layer.weight)
    ]


def stored(folder, suffix: str) -> dict[str, str]:
    """The safetensors dtype of every tensor named ``*suffix`` in ``folder``."""
    dtypes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if name.endswith(suffix):
                    dtypes[name] = f.get_slice(name).get_dtype()
    return dtypes


@needs_pack
@pytest.mark.slow
@pytest.mark.parametrize(("bits", "group_size"), [(4, 32), (8, 32), (4, 0)])
def test_transformers_loads_the_folders_weights(bits, group_size, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(bits, group_size))
    record = compressed.write_compressed(source, tmp_path / "ct")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    assert not config.get("sparsity_config")
    (group,) = config["config_groups"].values()
    assert group["targets"] == ["Linear"] and config["ignore"] == ["lm_head"]
    weights = group["weights"]
    assert weights["num_bits"] == bits and weights["type"] == "int" and weights["symmetric"]
    assert weights["strategy"] == ("group" if group_size else "channel")
    assert weights["group_size"] == (group_size or None)
    assert set(stored(tmp_path / "ct", ".weight_packed").values()) == {"I32"}
    assert set(stored(tmp_path / "ct", ".weight_scale").values()) == {"F32"}
    assert len(stored(tmp_path / "ct", ".weight_shape")) == 14
    assert not (tmp_path / "ct" / "quantization.safetensors").exists()

    dense = reference(source)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()  # stays compressed
    assert torch.equal(logits(loaded, tokenizer), logits(dense, tokenizer))  # decompresses
    assert differing_linears(loaded, dense) == []
    report = json.loads((source / "report.json").read_text())
    modules = dict(loaded.named_modules())
    for name, layer in report["layers"].items():
        assert int((modules[name].weight == 0).sum()) == layer["zeros"] > 0
    assert differing_linears(compressed_quant.load_packed(tmp_path / "ct"), dense) == []

    assert record["format"] == f"compressed-tensors pack-quantized W{bits}A16"
    details = record["details"]
    assert details["scale_dtype"] == "float32" and details["default_load_exact"]
    assert details["linear_ratio"] < (0.3 if bits == 4 else 0.4)
    saved = json.loads((tmp_path / "ct" / "report.json").read_text())["artifacts"]
    assert saved[record["format"]] == record and check_section("artifacts", saved) == []


@needs_pack
@pytest.mark.slow
def test_float16_folder_keeps_float16_scales_and_loads_exactly(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(8, 32), torch.float16)
    record = compressed.write_compressed(source, tmp_path / "ct")
    assert set(stored(tmp_path / "ct", ".weight_scale").values()) == {"F16"}
    assert record["details"]["scale_dtype"] == "float16" and record["details"]["default_load_exact"]
    dense, loaded = reference(source), AutoModelForCausalLM.from_pretrained(tmp_path / "ct")
    assert torch.equal(logits(loaded.eval(), tokenizer), logits(dense, tokenizer))
    assert differing_linears(loaded, dense) == []


@needs_pack
@pytest.mark.slow
def test_bfloat16_folder_is_exact_only_when_dequantized_at_load(tmp_path, tokenizer):
    """float32 scales on disk; transformers' default load rounds them to bfloat16 (the module's
    ``weight_scale`` is in the model's dtype), so its weights differ. If this starts passing,
    the card's first load snippet is exact for bfloat16 too."""
    from transformers import AutoModelForCausalLM

    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32), torch.bfloat16)
    record = compressed.write_compressed(source, tmp_path / "ct")
    assert set(stored(tmp_path / "ct", ".weight_scale").values()) == {"F32"}
    assert not record["details"]["default_load_exact"]
    dense = reference(source)
    assert differing_linears(compressed_quant.load_packed(tmp_path / "ct"), dense) == []
    default = AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    logits(default, tokenizer)  # the first forward decompresses
    assert differing_linears(default, dense) != []
    assert "dequantize=True" in record["load"][1]["code"]


@needs_pack
@pytest.mark.slow
def test_command_writes_the_folder_its_record_and_card(tmp_path, tokenizer):
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32))
    out = tmp_path / "ct"
    result = runner.invoke(app, ["export", "compressed", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "compressed-tensors pack-quantized W4A16" in result.output
    report = json.loads((out / "report.json").read_text())
    record = report["artifacts"]["compressed-tensors pack-quantized W4A16"]
    assert abs(record["bytes"] - compressed.folder_bytes(out)) < 0.01 * record["bytes"]  # + card
    card = (out / "README.md").read_text()
    assert 'LLM(model="' in card and "CompressedTensorsConfig(dequantize=True)" in card


@needs_pack
def test_grid_the_format_cannot_pack_refused_in_one_line(tmp_path, tokenizer):
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32))
    record = read_record(source)
    write_record(source, QuantRecord(QuantGrid(16, 32), "rtn", record.scales))
    with pytest.raises(BadInputError, match="packs 1 to 8-bit") as refused:
        compressed.write_compressed(source, tmp_path / "ct")
    assert "\n" not in str(refused.value) and not (tmp_path / "ct").exists()


@needs_pack
def test_record_of_a_non_linear_weight_refused_in_one_line(tmp_path, tokenizer):
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32))
    record = read_record(source)
    scales = {**record.scales, "model.embed_tokens.weight": torch.ones(1, 1, dtype=torch.float16)}
    write_record(source, QuantRecord(record.grid, "rtn", scales))
    with pytest.raises(BadInputError, match="model.embed_tokens.weight is Embedding") as refused:
        compressed.write_compressed(source, tmp_path / "ct")
    assert "\n" not in str(refused.value)


@needs_pack
def test_weight_off_its_grid_refused(tmp_path, tokenizer):
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32))
    record = read_record(source)
    name = sorted(record.scales)[0]
    record.scales[name] = record.scales[name] * 1.5  # the weights no longer lie on it
    write_record(source, record)
    with pytest.raises(BadInputError, match="not on its recorded int4 grid"):
        compressed.write_compressed(source, tmp_path / "ct")


@legacy
@pytest.mark.skipif(has_pack_quantized(), reason="the legacy stack's refusal")
def test_legacy_compressed_tensors_refuses_the_quantized_folder(tmp_path, tokenizer):
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32))
    result = runner.invoke(app, ["export", "compressed", str(source), "-o", str(tmp_path / "ct")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "compressed-tensors>=0.15" in lines[0]
    assert not (tmp_path / "ct").exists()


@needs_pack
@pytest.mark.integration
def test_embedded_model_group_32(embedded_dir, tmp_path, tokenizer):
    """SmolLM2-135M's 576- and 1536-column Linears in groups of 32."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    source = quantized_folder(tmp_path / "q", tokenizer, QuantGrid(4, 32), model=model)
    compressed.write_compressed(source, tmp_path / "ct")  # checks the read-back itself
    dense = reference(source)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct").eval()
    assert torch.equal(logits(loaded, tokenizer), logits(dense, tokenizer))
    assert differing_linears(loaded, dense) == []
