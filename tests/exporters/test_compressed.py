"""compressed-tensors checkpoints: written by the package's compressors, read back bit-identical
by transformers (2:4) or compressed-tensors' own decompressor (bitmask), config parsed by the
package without warnings, refusals in one line, ``--save-format compressed`` through the CLI."""

from __future__ import annotations

import json
import logging
import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners import PRUNERS
from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from compress.core.report import check_report, check_section
from exporters import compressed
from tests.compress.test_refusals import refused
from tests.exporters.conftest import minimal_report, prunable, prune_and_save
from tests.stacks import has_sparse_compressors, needs_sparse_compressors
from tests.tiny_models import family_configs, random_model

runner = CliRunner()


def pruned_folder(tmp_path, tokenizer, family: str, pattern: str):
    """A tiny ``family`` model, magnitude-pruned to ``pattern``, saved with its report."""
    model = random_model(family_configs(tokenizer.vocab_size)[family])
    folder = tmp_path / f"{family}-{pattern.replace(':', 'of')}"
    if pattern == "unstructured":
        prune_and_save(model, tokenizer, folder)
        return folder, model
    parsed = SparsityPattern.parse(pattern)
    layers = {}
    for name, weight in prunable(model).items():
        PRUNERS["magnitude"](weight, name).prune(parsed.sparsity, parsed)
        zeros = int((weight == 0).sum())
        layers[name] = {"zeros": zeros, "numel": weight.numel(), "sparsity": zeros / weight.numel()}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = minimal_report(model, layers, parsed.sparsity)
    report["summary"]["pattern"] = report["recipe"]["pattern"] = pattern
    write_json_atomic(folder / "report.json", report)
    return folder, model


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@needs_sparse_compressors
@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "opt"])
def test_round_trip_bit_identical(family, pattern, tmp_path, tokenizer):
    source, _ = pruned_folder(tmp_path, tokenizer, family, pattern)
    target = tmp_path / "ct"
    record = compressed.write_compressed(source, target)
    fmt = compressed.format_for(pattern)
    sparsity = json.loads((target / "config.json").read_text())["quantization_config"][
        "sparsity_config"
    ]
    assert sparsity["format"] == fmt and sparsity["targets"] == ["Linear"]
    assert sparsity["sparsity_structure"] == pattern
    assert "lm_head" in sparsity["ignore"]
    dense = compressed.load_dense(source)
    embeddings = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.Embedding)]
    assert set(embeddings) <= set(sparsity["ignore"])
    if pattern == "2:4":  # transformers' own compressed-tensors support, nothing of ours
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(target, dtype="auto").eval()
    else:
        loaded = compressed.load_compressed(target)
    assert compressed.differing_tensors(dense, loaded) == []
    tokens = torch.tensor([tokenizer("Sparse weights, dense results.").input_ids])
    assert torch.equal(logits(dense, tokens), logits(loaded, tokens))
    details = record["details"]
    assert details["linear_ratio"] < 0.6 and record["bytes"] < details["dense_bytes"]
    saved = json.loads((target / "report.json").read_text())["artifacts"]
    assert saved[record["format"]] == record and check_section("artifacts", saved) == []
    assert record["parity"] == {"round_trip": "bit-identical weights"}


@needs_sparse_compressors
def test_config_read_back_by_compressed_tensors_without_warnings(tmp_path, tokenizer, caplog):
    from compressed_tensors import ModelCompressor
    from compressed_tensors.config import Sparse24BitMaskConfig
    from loguru import logger

    source, _ = pruned_folder(tmp_path, tokenizer, "llama", "2:4")
    compressed.write_compressed(source, tmp_path / "ct")
    caplog.clear()  # the write's own read-back logs through transformers
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
            warnings.simplefilter("error")
            compressor = ModelCompressor.from_pretrained(str(tmp_path / "ct"))
    finally:
        logger.remove(sink)
    assert messages == [] and [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert isinstance(compressor.sparsity_config, Sparse24BitMaskConfig)
    assert compressor.sparsity_compressor is not None


@needs_sparse_compressors
def test_unstructured_is_not_read_by_transformers_from_pretrained(tmp_path, tokenizer):
    """The documented limit behind load_compressed: transformers 4.57 runs the bitmask
    compressor on its meta-device model. If this starts passing, load with from_pretrained."""
    from transformers import AutoModelForCausalLM

    source, _ = pruned_folder(tmp_path, tokenizer, "llama", "unstructured")
    compressed.write_compressed(source, tmp_path / "ct")
    with pytest.raises(NotImplementedError, match="meta tensor"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype="auto")


@needs_sparse_compressors
def test_other_n_m_falls_back_to_bitmask(tmp_path, tokenizer):
    source, _ = pruned_folder(tmp_path, tokenizer, "llama", "4:8")
    record = compressed.write_compressed(source, tmp_path / "ct")
    assert record["format"] == "compressed-tensors sparse-bitmask"
    assert record["details"]["sparsity_structure"] == "4:8"
    dense = compressed.load_dense(source)
    assert compressed.differing_tensors(dense, compressed.load_compressed(tmp_path / "ct")) == []


@needs_sparse_compressors
def test_non_linear_layers_refused_in_one_line(tmp_path, tokenizer):
    source, _ = pruned_folder(tmp_path, tokenizer, "gpt2", "unstructured")
    out = tmp_path / "ct"
    result = runner.invoke(app, ["export", "compressed", str(source), "--output", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Conv1D" in lines[0] and "--save-format dense" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".ct*"))


def test_missing_sparse_compressors_refused(monkeypatch):
    compressors = pytest.importorskip(
        "compressed_tensors.compressors", reason="compressed-tensors is not installed here"
    )
    BaseCompressor = compressors.BaseCompressor

    monkeypatch.setattr(BaseCompressor, "registered_names", classmethod(lambda cls: ["dense"]))
    with pytest.raises(BadInputError, match=r"is legacy: .* compressed-tensors 0\.14\.0\.1 only"):
        compressed.require_sparse_compressors()


def test_missing_package_names_the_extra_and_the_transformers_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import raises ImportError
    with pytest.raises(BadInputError) as refused:
        compressed.require_sparse_compressors()
    message = str(refused.value)
    assert "compress[legacy-sparse]" in message and "transformers>=4.57,<4.58" in message
    assert "is legacy" in message and "(not installed)" in message
    assert "--save-format dense" in message and "\n" not in message


@pytest.mark.skipif(
    has_sparse_compressors(), reason="this stack has compressed-tensors 0.14.0.1, which writes it"
)
def test_prune_save_format_compressed_refused_as_legacy(tiny_model_dir, tmp_path):
    """Where compressed-tensors 0.14.0.1 is missing (the default stack), --save-format
    compressed is refused in one line before the model loads, saying it is legacy and how to
    get it."""
    args = ["prune", tiny_model_dir, "--pattern", "2:4", "--save-format", "compressed"]
    words = ["is legacy", "compressed-tensors 0.14.0.1", "compress[legacy-sparse]"]
    refused([*args, "--output", tmp_path / "out"], tmp_path, *words, "--save-format dense")


@needs_sparse_compressors
@pytest.mark.slow
def test_prune_save_format_compressed(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = ["prune", str(tiny_model_dir), "--pattern", "2:4", "--reconstruct", "none"]
    fast = ["--nsamples", "2", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
    result = runner.invoke(app, [*args, *fast, "--save-format", "compressed", "--output", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == "sparse-24-bitmask"
    report = json.loads((out / "report.json").read_text())
    assert check_report(report) == []
    record = report["artifacts"]["compressed-tensors sparse-24-bitmask"]
    assert abs(record["bytes"] - compressed.folder_bytes(out)) < 0.01 * record["bytes"]
    loaded = compressed.load_compressed(out)
    modules = dict(loaded.named_modules())
    for name, layer in report["layers"].items():
        assert int((modules[name].weight == 0).sum()) == layer["zeros"]
    card = (out / "README.md").read_text()
    assert "### compressed-tensors sparse-24-bitmask (the weights of this folder)" in card
    assert f"Measured size: {record['bytes'] / 2**20:.1f} MiB" in card
    assert 'LLM(model="' in card and "ordinary dense weights" not in card
    assert json.loads((out / "recipe.json").read_text())["save_format"] == "compressed"
