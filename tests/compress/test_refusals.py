"""Damaged inputs a new user may hand the CLI: each is one ``error:`` line, exit 2, no traceback,
and nothing written (no output folder, no partial folder, existing folders left as they were)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli.main import app
from compress.model import placement
from tests.stacks import legacy

FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]
NOT_UTF8 = bytes(range(128, 256)) * 8  # opens with 0x80, a continuation byte: invalid UTF-8


def snapshot(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (hidden ones too) with its size (-1: a folder)."""
    return {
        str(p.relative_to(folder)): p.stat().st_size if p.is_file() else -1
        for p in folder.rglob("*")
    }


def refused(args: list, root: Path, *words: str) -> None:
    """``compress *args`` exits 2 with one error line holding ``words`` and leaves ``root`` as it
    was (any output it was asked to write is neither created nor half-created)."""
    before = snapshot(root)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert snapshot(root) == before


def damage_truncate(file: Path) -> None:
    with file.open("r+b") as handle:
        handle.truncate(file.stat().st_size // 2)


def damage_header(file: Path) -> None:
    """Overwrite bytes inside the JSON header (its 8-byte length prefix stays right)."""
    with file.open("r+b") as handle:
        handle.seek(8)
        handle.write(b"\x00garbage")


def damage_length(file: Path) -> None:
    """Overwrite the 8-byte little-endian header length."""
    with file.open("r+b") as handle:
        handle.write(b"\xff" * 8)


DAMAGES = {"truncated": damage_truncate, "header": damage_header, "length": damage_length}


@pytest.fixture(params=sorted(DAMAGES))
def damaged(request, tiny_model_dir, tmp_path):
    """A copy of the tiny model folder with its model.safetensors damaged one way."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    DAMAGES[request.param](folder / "model.safetensors")
    return folder


def test_prune_refuses_damaged_safetensors(damaged, tmp_path):
    out = tmp_path / "out"
    words = (str(damaged / "model.safetensors"), "damaged")
    refused(["prune", damaged, "--output", out, *FAST], tmp_path, *words)
    out.mkdir()
    (out / "keep.txt").write_text("finished work")
    refused(["prune", damaged, "--output", out, "--overwrite", *FAST], tmp_path, *words)


def test_eval_ppl_refuses_damaged_safetensors(damaged, tmp_path):
    args = ["eval", "ppl", damaged, "--seqlen", "32", "--max-windows", "1", "--device", "cpu"]
    words = (str(damaged / "model.safetensors"), "damaged")
    refused([*args, "--json", tmp_path / "ppl.json"], tmp_path, *words)


def test_export_onnx_refuses_damaged_safetensors(damaged, tmp_path):
    out = tmp_path / "onnx"
    words = (str(damaged / "model.safetensors"), "damaged")
    refused(["export", "onnx", damaged, "--output", out], tmp_path, *words)
    out.mkdir()
    (out / "keep.txt").write_text("finished work")
    refused(["export", "onnx", damaged, "--output", out, "--overwrite"], tmp_path, *words)


@pytest.mark.parametrize("name", ["calib.txt", "calib.jsonl"])
def test_prune_refuses_binary_calibration_file(name, tiny_model_dir, tmp_path):
    calib = tmp_path / name
    calib.write_bytes(NOT_UTF8)
    args = ["prune", tiny_model_dir, "--calib", calib, "--output", tmp_path / "out", *FAST]
    refused(args, tmp_path, str(calib), "UTF-8")


def test_eval_ppl_refuses_binary_dataset(tiny_model_dir, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "good.txt").write_text("a readable paragraph\n\nand another one")
    (texts / "bad.txt").write_bytes(b"readable start, then " + NOT_UTF8)
    args = ["eval", "ppl", tiny_model_dir, "--dataset", texts, "--seqlen", "32", "--device", "cpu"]
    refused([*args, "--json", tmp_path / "ppl.json"], tmp_path, str(texts / "bad.txt"), "UTF-8")


def write_gguf(path: Path, architecture: str) -> Path:
    """A small GGUF file: some metadata (a token list) and two float32 tensors."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_token_list([f"t{i}" for i in range(64)])
    writer.add_tensor("token_embd.weight", np.ones((64, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones((8,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Cut in the header, in the token list (the reader raises IndexError: a traceback before), in the
# token list again (ValueError) and in the last tensor (ValueError: "could not be found ... on the
# Hub" before).
@pytest.mark.parametrize("cut", [20, 200, 600, -1])
def test_truncated_gguf_is_called_damaged(cut, tmp_path):
    from gguf import GGUFReader

    whole = GGUFReader(write_gguf(tmp_path / "whole.gguf", "llama"))
    assert len(whole.tensors) == 2  # the file parses before it is cut
    path = tmp_path / "model.gguf"
    path.write_bytes((tmp_path / "whole.gguf").read_bytes()[:cut])
    args = ["eval", "ppl", path, "--seqlen", "32", "--max-windows", "1", "--device", "cpu"]
    refused([*args, "--json", tmp_path / "ppl.json"], tmp_path, str(path), "damaged")


def test_prune_calls_a_cut_download_of_the_embedded_gguf_damaged(tmp_path):
    from compress.model.loading import embedded_gguf

    path = tmp_path / "SmolLM2.gguf"
    with embedded_gguf().open("rb") as whole:
        path.write_bytes(whole.read(1_000))
    args = ["prune", path, "--output", tmp_path / "out", *FAST]
    refused(args, tmp_path, str(path), "damaged", "download")


def test_gguf_that_parses_but_transformers_refuses_is_not_called_damaged(tmp_path):
    path = write_gguf(tmp_path / "bert.gguf", "bert")
    refused(["eval", "ppl", path, "--device", "cpu"], tmp_path, str(path), "architecture bert")


@pytest.mark.parametrize(("platform", "factor"), [("darwin", 1), ("linux", 1024)])
def test_peak_rss_unit_follows_the_platform(platform, factor, monkeypatch):
    usage = types.SimpleNamespace(ru_maxrss=123_456)
    monkeypatch.setattr(placement.memory.resource, "getrusage", lambda who: usage)
    monkeypatch.setattr(sys, "platform", platform)
    assert placement.peak_rss_bytes() == 123_456 * factor


# -- damaged model folders ------------------------------------------------------------------
def without(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).unlink(missing_ok=True)
    return folder


def bad_json(folder: Path) -> Path:
    (folder / "config.json").write_text('{"model_type": "llama", ')
    return folder


def unknown_type(folder: Path) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    return folder


def pickled(folder: Path) -> Path:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return folder


TOKENIZER = [
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
# Main: 110-, 130- and 141-line tracebacks, "could not be found locally or on the Hub" for an
# architecture transformers does not know, an OSError traceback for pickled weights.
FOLDER_DAMAGES = {
    "no weights": (lambda f: without(f, "model.safetensors"), ["no weights"]),
    "config not JSON": (bad_json, ["config.json", "not valid JSON"]),
    "no tokenizer": (lambda f: without(f, *TOKENIZER), ["no tokenizer"]),
    "unknown architecture": (unknown_type, ["architecture 'frobnicator' is not supported"]),
    "pickled weights": (pickled, ["pytorch_model.bin", "safetensors only"]),
}


@pytest.mark.parametrize("damage", sorted(FOLDER_DAMAGES))
def test_a_damaged_model_folder_is_one_line(damage, tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    make, words = FOLDER_DAMAGES[damage]
    make(folder)
    refused(["prune", folder, "--output", tmp_path / "out", *FAST], tmp_path, *words)
    args = ["eval", "ppl", folder, "--seqlen", "32", "--eval-windows", "1", "--device", "cpu"]
    refused(args, tmp_path, *words)


# -- a tokenizer saved by transformers 5 -----------------------------------------------------
TRANSFORMERS5 = Path(__file__).parent / "data" / "transformers5"


@legacy  # what transformers 4.57 would misread: both stacks
def test_a_tokenizer_saved_by_transformers_5_loads(tiny_model_dir, tokenizer, tmp_path):
    """transformers 5.23 saves tokenizer.json as it was, tokenizer_config.json with
    ``"tokenizer_class": "TokenizersBackend"`` (the file in tests/compress/data/transformers5
    is the one it wrote for the embedded tokenizer), and no tokenizer.model or
    special_tokens_map.json. Main on transformers 4.57: "Tokenizer class TokenizersBackend
    does not exist" in a 60-line traceback."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    without(folder, "tokenizer.model", "special_tokens_map.json")
    shutil.copy(TRANSFORMERS5 / "tokenizer_config.json", folder)
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "TokenizersBackend"
    )
    from compress.model.loading import load_model

    loaded = load_model(str(folder), "cpu")
    text = "Pruning keeps the weights that matter. <|im_start|>user\nhello<|im_end|>"
    assert loaded.tokenizer(text).input_ids == tokenizer(text).input_ids
    assert loaded.tokenizer.eos_token == tokenizer.eos_token
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(a) for a in ["prune", folder, "--output", out, *FAST]])
    assert result.exit_code == 0, result.output
    assert (out / "tokenizer.json").is_file()


@legacy  # what transformers 4.57 would misread: both stacks
def test_a_rope_that_transformers_4_would_misread_is_refused(tiny_model_dir, tmp_path):
    """transformers 5 writes ``rope_parameters`` (tests/compress/data/transformers5/config.json
    is the tiny Llama's config as 5.23 saved it) where 4.57 reads ``rope_theta`` and
    ``rope_scaling``: a Llama-3-style rope saved by 5 loads on 4.57 as the default rotary
    embedding, another model, without a word (main). On 4.57 it is refused in one line; on 5
    it loads with the rope it records."""
    import transformers

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((TRANSFORMERS5 / "config.json").read_text())
    config["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "default"}
    (folder / "config.json").write_text(json.dumps(config))
    if not transformers.__version__.startswith("4."):
        from compress.model.loading import load_model

        loaded = load_model(str(folder), "cpu")
        assert loaded.model.config.rope_parameters["rope_theta"] == 500000.0
        return
    args = ["eval", "ppl", folder, "--seqlen", "32", "--eval-windows", "1", "--device", "cpu"]
    refused(args, tmp_path, "rope_parameters", "transformers 5")
    config["rope_parameters"]["rope_theta"] = 10000.0  # what 4.57 reads anyway: accepted
    (folder / "config.json").write_text(json.dumps(config))
    from compress.model.loading import load_model

    assert load_model(str(folder), "cpu").model.config.rope_theta == 10000.0
