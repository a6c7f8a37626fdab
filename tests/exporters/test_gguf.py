"""GGUF export: the quantized folder's integers in Q4_0 / Q8_0 blocks, loaded back by
transformers' GGUF loader with the same weights (bit for bit), the same logits and the same
tokens; the block layout against gguf-py's own dequantizer; refusals in one line."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
from typer.testing import CliRunner

from compress.algorithms.quant.grid import QuantGrid
from compress.cli.main import app
from compress.core.report import check_section
from exporters.gguf.blocks import pack, quant_type
from exporters.registry import EXPORTERS, run_export
from tests.quantized_folders import block_linears, save_quantized
from tests.tiny_models import family_configs, random_model

gguf = pytest.importorskip("gguf", reason="GGUF export needs the gguf package")
runner = CliRunner()
OLD_LOADER = int(version("transformers").split(".")[0]) < 5
TEXT = "Quantized weights, 12345 exact integers <|im_start|>user"


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE of 320 tokens (the embedded model's 49k-token vocabulary makes every
    GGUF parse take seconds), with the special tokens SmolLM2's chat format uses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(
        [TEXT, "exact integers in blocks of thirty-two weights"] * 20, trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


def quantized_folder(tmp_path, tokenizer, family: str, bits: int, group_size: int = 32):
    torch.manual_seed(0)
    model = random_model(family_configs(len(tokenizer))[family]).eval()
    folder = tmp_path / f"{family}-int{bits}"
    state = save_quantized(model, folder, QuantGrid(bits, group_size), tokenizer)
    return folder, model, state


def export(folder):
    exporter = EXPORTERS["gguf"]()
    config = exporter.config(folder=folder)
    return run_export(exporter, config), config.target


@pytest.mark.parametrize("bits", [4, 8])
def test_block_layout_is_gguf_py_s(bits):
    """Each integer of the grid, many times, in shuffled block positions: gguf-py's dequantizer
    reads ``q * d`` exactly (float32) back from the blocks."""
    grid = QuantGrid(bits, 32)
    q = torch.arange(grid.qmin, grid.qmax + 1).repeat(80)[:1280].reshape(10, 128)
    q = q[:, torch.randperm(128, generator=torch.Generator().manual_seed(0))].to(torch.int8)
    scales = torch.rand(10, 4, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    blocks = pack(q, scales, bits)
    back = gguf.dequantize(blocks, quant_type(bits))
    assert back.dtype.name == "float32" and back.shape == (10, 128)
    assert torch.equal(torch.from_numpy(back), q.float() * grid.expand(scales, 128))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "bits"), [("llama", 4), ("llama", 8), ("qwen2", 4), ("qwen2", 8), ("mistral", 4)]
)
def test_round_trip_through_transformers(family, bits, tmp_path, bpe):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, model, state = quantized_folder(tmp_path, bpe, family, bits)
    record, target = export(folder)
    name = record["details"]["file"]
    assert name == f"model.Q{bits}_0.gguf" and record["format"] == f"gguf Q{bits}_0"
    assert check_section("artifacts", {record["format"]: record}) == []
    assert record["bytes"] == sum(p.stat().st_size for p in target.iterdir())
    assert (target / "Modelfile").read_text() == f"FROM ./{name}\n"

    reader = gguf.GGUFReader(target / name)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    linears = block_linears(model)
    assert sum(kind == f"Q{bits}_0" for kind in types.values()) == len(linears)
    assert (
        "output.weight" not in types
        if model.config.tie_word_embeddings
        else "output.weight" in types
    )
    assert types["token_embd.weight"] == "F32" and types["output_norm.weight"] == "F32"

    loaded = AutoModelForCausalLM.from_pretrained(target, gguf_file=name, dtype=torch.float32)
    loaded = loaded.eval()
    back = loaded.state_dict()
    for key, value in state.items():  # every weight, the block integers' values included
        assert torch.equal(back[key], value), key
    for layer in linears:
        weight = back[f"{layer}.weight"]
        assert torch.equal(weight == 0, state[f"{layer}.weight"] == 0)
        assert (weight == 0).float().mean() >= 0.5  # the pruned half stays exact zeros

    ids = torch.tensor([bpe(TEXT).input_ids])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    if family == "qwen2" and OLD_LOADER:
        return  # transformers 4.57 splits a qwen2 file's text with Qwen2's regex, ignoring
        # tokenizer.ggml.pre (5 reads it); llama.cpp reads it
    read = AutoTokenizer.from_pretrained(target, gguf_file=name)
    plain = {"add_special_tokens": False}
    assert read(TEXT, **plain).input_ids == bpe(TEXT, **plain).input_ids


def run_cli(folder):
    result = runner.invoke(app, ["export", "gguf", str(folder)])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result, errors


@pytest.mark.parametrize(
    ("family", "bits", "group", "says"),
    [
        ("llama", 4, 64, "group size 64"),
        ("llama", 8, 0, "one scale per row"),
        ("gpt2", 4, 32, "'gpt2'"),
    ],
)
def test_refused_in_one_line_before_any_work(family, bits, group, says, tmp_path, bpe):
    folder, _, _ = quantized_folder(tmp_path, bpe, family, bits, group)
    result, errors = run_cli(folder)
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "llama" in errors[0] or "group-size 32" in errors[0]
    assert not (folder / "gguf").exists() and not list(folder.glob(".gguf*"))


def test_folder_without_record_refused(tmp_path, bpe):
    folder, _, _ = quantized_folder(tmp_path, bpe, "llama", 4)
    (folder / "quantization.safetensors").unlink()
    result, errors = run_cli(folder)
    assert result.exit_code == 2 and len(errors) == 1
    assert "compress quantize" in errors[0] and "prune --quantize" in errors[0]


def test_weight_off_its_grid_refused(tmp_path, bpe):
    from safetensors.torch import load_file, save_file

    folder, _, _ = quantized_folder(tmp_path, bpe, "llama", 4)
    weights = load_file(folder / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, 0] += 1e-3
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    result, errors = run_cli(folder)
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "model.layers.1.mlp.up_proj.weight is not on its recorded int4 grid" in errors[0]
    assert not (folder / "gguf").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_embedded_model_q4_0(embedded_dir, tmp_path, tokenizer):
    """SmolLM2-135M pruned and rounded to int4, exported, loaded back: the same logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32).eval()
    folder = tmp_path / "smollm2-int4"
    save_quantized(model, folder, QuantGrid(4, 32), tokenizer)
    record, target = export(folder)
    assert record["details"]["pre_tokenizer"] == "gpt-2"  # the embedded folder's tokenizer.json
    assert record["details"]["tensors"] == {"F32": 62, "Q4_0": 210}
    name = record["details"]["file"]
    loaded = AutoModelForCausalLM.from_pretrained(target, gguf_file=name, dtype=torch.float32)
    ids = torch.tensor([tokenizer("The capital of France is").input_ids])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)
