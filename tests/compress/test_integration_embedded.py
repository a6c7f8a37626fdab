"""The embedded SmolLM2-135M-Instruct, pruned with few short calibration sequences."""

import json

import pytest
from typer.testing import CliRunner

from compress.cli.main import app


@pytest.mark.integration
def test_embedded_wanda_perplexity_rises_but_stays_sane(tmp_path, embedded_dir):
    out = tmp_path / "pruned"
    args = [
        "prune",
        "--nsamples",
        "8",
        "--seqlen",
        "128",
        "--device",
        "cpu",
        "--output",
        str(out),
        "--eval",
        "--eval-seqlen",
        "256",
        "--eval-windows",
        "6",
        # the default technique (br+gp) at a fifth of its default epochs: the whole default path
        # in a quarter of the time
        "--recon-epochs",
        "2",
        "--holdout-nsamples",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ppl = report["evaluation"]["perplexity"]
    assert 5 < ppl["before"] < 60  # reference/environment.md: ~22 on Wikipedia text
    assert ppl["before"] < ppl["after"] < 4 * ppl["before"]
    assert report["model"]["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(report["blocks"]) == 30 and report["summary"]["sparsity"] == 0.5
