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


def test_checkpointed_streams_come_back_as_saved():
    from compress.engine import ActivationStore, Streams

    cpu = torch.device("cpu")
    store = ActivationStore("cpu", torch.bfloat16, torch.float32, cpu, cpu)
    batches = [torch.randn(2, 3, 4), torch.randn(1, 3, 4)]
    saved = Streams([], store.store(batches), prev_sparse=store.store(batches[:1]))
    flat = store.state({"calibration": saved})
    assert sorted(flat) == [  # the names inside streams-step-{i}.safetensors
        "calibration.prev_sparse.0",
        "calibration.sparse.0",
        "calibration.sparse.1",
    ]
    restored = Streams([], [], dense=[torch.zeros(1)])
    store.restore({"calibration": restored}, flat)
    assert restored.dense is None and restored.prev_local is None
    assert all(x.dtype == torch.bfloat16 for x in restored.sparse)
    for got, want in zip(restored.sparse + restored.prev_sparse, saved.sparse + saved.prev_sparse):
        assert torch.equal(got, want)


@pytest.mark.parametrize("main", [True, False])
def test_only_the_main_process_clears_the_work_folder(tmp_path, monkeypatch, main):
    from compress import distributed
    from compress.engine import WorkFolder

    work = WorkFolder(tmp_path / ".out.work")
    work.path.mkdir()
    monkeypatch.setattr(distributed, "is_main", lambda: main)
    work.start(resume=True, log=lambda message: None)
    assert work.path.exists()  # --resume keeps it
    work.start(resume=False, log=lambda message: None)
    assert work.path.exists() is not main


def test_ranks_do_not_checkpoint(tmp_path, monkeypatch):
    """Under --distributed a rank holds only its slice of every batch: nothing to resume from."""
    from compress import distributed
    from compress.core.config import PruneConfig
    from compress.engine import Engine, WorkFolder

    work = WorkFolder(tmp_path / ".out.work")
    assert Engine(random_llama(), PruneConfig(), work).work is work
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert Engine(random_llama(), PruneConfig(), work).work is None
