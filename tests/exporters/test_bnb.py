"""bitsandbytes NF4 / int8 on a pruned tiny Llama folder: loads, keeps its zeros, perplexity."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compress.core.errors import BadInputError
from compress.core.report import check_section
from tests.exporters.conftest import make_pruned_dir

pytest.importorskip("bitsandbytes")

# .txt documents are paragraphs; every 10th is the test split
TEXT = "\n\n".join(
    f"Paragraph {i}: the river runs past the old mill and the children count the boats."
    for i in range(60)
)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tokenizer):
    return make_pruned_dir(tmp_path_factory, tokenizer, "llama")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "text.txt").write_text(TEXT)
    return str(folder / "text.txt")


@pytest.mark.parametrize("scheme", ["bnb-nf4", "bnb-int8"])
def test_quantized_folder_keeps_zeros_and_measures_perplexity(scheme, pruned, texts, tmp_path):
    from transformers import AutoModelForCausalLM

    from exporters.bnb import dequantized, quantize_folder

    out = tmp_path / "q"
    result = quantize_folder(pruned, out, scheme, "cpu", texts, eval_seqlen=32, eval_windows=2)
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"][scheme] == result and report["layers"]  # source report kept
    assert check_section("artifacts", report["artifacts"]) == []
    dequantized_ = result["details"]["dequantized"]
    assert dequantized_["layers"] == 14  # 7 Linears x 2 blocks; lm_head stays float
    assert dequantized_["sparsity"] >= report["summary"]["sparsity"] - 1e-9
    ppl = result["perplexity"]
    assert ppl["windows"] == 2 and math.isfinite(ppl["after"]) and math.isfinite(ppl["before"])
    assert result["bytes"] < result["details"]["source_bytes"]
    reloaded = AutoModelForCausalLM.from_pretrained(out, device_map={"": "cpu"})
    weights = [dequantized(m) for m in reloaded.modules()]
    assert sum(w is not None for w in weights) == 14
    ids = torch.randint(0, 100, (1, 8))
    assert torch.isfinite(reloaded(input_ids=ids).logits).all()


def test_bad_scheme_and_unpruned_folder_are_refused(pruned, tmp_path):
    from exporters.bnb import quantize_folder

    with pytest.raises(BadInputError, match="bnb-nf4, bnb-int8"):
        quantize_folder(pruned, tmp_path / "q", "bnb-fp8", "cpu")
    with pytest.raises(BadInputError, match="no report.json"):
        quantize_folder(tmp_path, tmp_path / "q", "bnb-nf4", "cpu")


def test_cli_export_bnb(pruned, texts, tmp_path):
    from typer.testing import CliRunner

    from compress.cli.main import app

    out = tmp_path / "nf4"
    args = [
        "export",
        "bnb",
        str(pruned),
        "--output",
        str(out),
        "--quantize",
        "bnb-nf4",
        "--device",
        "cpu",
        "--eval-dataset",
        texts,
        "--eval-seqlen",
        "16",
        "--eval-windows",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bnb-nf4" in result.output and (out / "report.json").is_file()
    assert "bnb-nf4" in json.loads((out / "report.json").read_text())["artifacts"]
