"""A run killed mid-way resumes from its last finished block to identical weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from compress.cli.main import app
from tests.tiny_models import random_llama

LAYERS = 4


@pytest.fixture(scope="module")
def six_block_model(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("six-blocks")
    random_llama(layers=LAYERS).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def prune_args(model, out):
    return [
        "prune",
        str(model),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--nsamples",
        "8",
        "--seqlen",
        "32",
        "--batch-size",
        "4",
        "--reconstruct",
        "br+gp+cr",
        "--recon-epochs",
        "30",
        "--recon-lr",
        "1e-3",
    ]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(six_block_model, tmp_path):
    reference = tmp_path / "reference"
    assert CliRunner().invoke(app, prune_args(six_block_model, reference)).exit_code == 0

    out = tmp_path / "killed"
    state = tmp_path / ".killed.work" / "state.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "compress.cli", *prune_args(six_block_model, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["next_block"] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    done = json.loads(state.read_text())["next_block"]
    assert proc.returncode == -signal.SIGKILL and 1 <= done < LAYERS, (
        "the run was not killed mid-way"
    )
    assert not out.exists()

    result = CliRunner().invoke(app, [*prune_args(six_block_model, out), "--resume"])
    assert result.exit_code == 0, result.output
    resumed = load_file(out / "model.safetensors")
    expected = load_file(reference / "model.safetensors")
    assert resumed.keys() == expected.keys()
    for name in expected:
        assert torch.equal(resumed[name], expected[name]), name
    assert not state.parent.exists()
    report = json.loads((out / "report.json").read_text())
    assert [b["index"] for b in report["blocks"]] == list(range(LAYERS))


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(six_block_model, tmp_path):
    from compress.engine import WorkFolder

    out = tmp_path / "out"
    WorkFolder(tmp_path / ".out.work").save_step(
        0, {}, {}, {}, {"layers": {}, "blocks": []}, {"method": "magnitude"}
    )
    result = CliRunner().invoke(app, [*prune_args(six_block_model, out), "--resume"])
    assert result.exit_code == 2
    assert "used different settings" in result.stderr
