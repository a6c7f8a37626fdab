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
        "--checkpoint-every",
        "0",  # one per block, so the kill below lands between checkpoints
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
    from compress.algorithms import distributed
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
    from compress.algorithms import distributed
    from compress.core.config import PruneConfig
    from compress.engine import Engine, WorkFolder

    work = WorkFolder(tmp_path / ".out.work")
    assert Engine(random_llama(), PruneConfig(), work).work is work
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert Engine(random_llama(), PruneConfig(), work).work is None


# -- --checkpoint-every ------------------------------------------------------------------------
def checkpoint_engine(tmp_path, every: float, technique: str = "br+gp"):
    from compress.core.config import PruneConfig, ReconstructConfig
    from compress.engine import Engine, WorkFolder

    config = PruneConfig(
        reconstruct=ReconstructConfig(technique=technique, steps=2),
        checkpoint_every=every,
    )
    return Engine(random_llama(layers=LAYERS), config, WorkFolder(tmp_path / ".out.work"))


def calibration_ids() -> torch.Tensor:
    return torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(0))


def record_saves(engine) -> list[tuple[int, list[int]]]:
    """Stand in for the work folder's writes: (step, blocks saved) per checkpoint."""
    saves = []
    engine.work.save_step = lambda step, blocks, *rest: saves.append((step, sorted(blocks)))
    return saves


@pytest.mark.parametrize(
    ("technique", "expected"),
    [
        ("br+gp", [(0, [0]), (1, [1]), (2, [2]), (3, [3])]),
        ("br+gp+cr", [(0, [0]), (1, [0, 1]), (2, [1, 2]), (3, [2, 3])]),
    ],
)
def test_checkpoint_every_zero_saves_each_step_with_its_window(tmp_path, technique, expected):
    engine = checkpoint_engine(tmp_path, 0, technique)
    saves = record_saves(engine)
    engine.run(calibration_ids())
    assert saves == expected


def test_a_long_interval_saves_the_last_step_with_every_unsaved_block(tmp_path):
    engine = checkpoint_engine(tmp_path, 1e9)
    saves = record_saves(engine)
    engine.run(calibration_ids())
    assert saves == [(LAYERS - 1, list(range(LAYERS)))]


def test_offloaded_blocks_are_saved_as_they_finish(tmp_path, monkeypatch):
    """An offloaded block's weights go back to their offload store after its turn, so its step
    is checkpointed at once, with the unsaved blocks before it."""
    from compress.engine import steps

    engine = checkpoint_engine(tmp_path, 1e9)
    offloaded = {id(engine.adapter.blocks[1])}
    monkeypatch.setattr(steps, "holds_offloaded", lambda blocks: id(blocks[-1]) in offloaded)
    saves = record_saves(engine)
    engine.run(calibration_ids())
    assert saves == [(1, [0, 1]), (3, [2, 3])]


def test_resume_from_a_checkpoint_of_several_blocks_matches_uninterrupted(tmp_path, monkeypatch):
    from compress.engine import steps

    reference = checkpoint_engine(tmp_path / "reference", 1e9)
    reference.run(calibration_ids())
    expected = reference.model.state_dict()

    class Crash(Exception):
        pass

    def crash_after_third_block(done: int, total: int, tokens_per_second: float) -> None:
        if done == 3:
            raise Crash

    engine = checkpoint_engine(tmp_path, 1e9)
    saved_step = {id(engine.adapter.blocks[1])}  # a checkpoint after step 1 only: blocks 0 and 1
    monkeypatch.setattr(steps, "holds_offloaded", lambda blocks: id(blocks[-1]) in saved_step)
    with pytest.raises(Crash):
        engine.run(calibration_ids(), recipe={"run": 1}, on_block=crash_after_third_block)
    assert engine.work.read_state()["next_block"] == 2
    assert sorted(engine.work.read_state()["block_files"]) == ["0", "1"]

    monkeypatch.setattr(steps, "holds_offloaded", lambda blocks: False)
    resumed = checkpoint_engine(tmp_path, 1e9)
    resumed.run(calibration_ids(), recipe={"run": 1}, resume=True)
    got = resumed.model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert [b["index"] for b in resumed.outcome.blocks] == list(range(LAYERS))


def test_a_negative_checkpoint_interval_is_refused_in_one_line():
    from compress.core.config import PruneConfig
    from compress.core.errors import BadInputError

    with pytest.raises(BadInputError, match=r"^--checkpoint-every is -1.0; give seconds >= 0"):
        PruneConfig(checkpoint_every=-1.0)
