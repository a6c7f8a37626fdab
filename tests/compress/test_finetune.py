"""Fine-tuning a pruned tiny Llama: exact sparsity, report, resume, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.report import REPORT_FORMAT
from compress.finetune import (
    FinetuneConfig,
    FinetuneRun,
    finetune,
    lr_lambda,
    sparsity_masks,
    window_order,
)
from compress.model.blocks import BlockAdapter

WORDS = (
    "the river runs past a mill where farmers bring grain in autumn and the miller keeps a "
    "ledger of every sack while children watch boats carry wool toward the coast"
).split()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def text_file(tmp_path):
    """60 short documents separated by blank lines (every tenth is the held-out split)."""
    generator = torch.Generator().manual_seed(0)
    docs = []
    for _ in range(60):
        picks = torch.randint(0, len(WORDS), (40,), generator=generator).tolist()
        docs.append(" ".join(WORDS[i] for i in picks) + ".")
    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture
def pruned_dir(tmp_path, tiny_llama, tokenizer):
    """The tiny Llama with half of every block Linear weight zeroed, saved like compress prune."""
    adapter = BlockAdapter(tiny_llama)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for index in range(len(adapter)):
            for module in adapter.prunable_layers(index).values():
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator) > 0.5)
    folder = tmp_path / "pruned"
    tiny_llama.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    report = {
        "format": REPORT_FORMAT,
        "summary": {"sparsity": 0.5},
        "evaluation": {  # a real section: the finetune section that takes it over is checked
            "perplexity": {"dataset": "wikipedia", "split": "test", "seqlen": 32, "windows": 2}
            | {"tokens": 64, "before": 20.0, "after": 30.0}
        },
    }
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "recipe.json").write_text(json.dumps({"method": "magnitude"}))
    return folder


def config(pruned_dir, text_file, tmp_path, **overrides) -> FinetuneConfig:
    settings = dict(
        model=str(pruned_dir),
        data=str(text_file),
        output=str(tmp_path / "out"),
        steps=3,
        lr=1e-3,
        seqlen=32,
        batch=2,
        grad_accum=2,
        eval_every=2,
        eval_windows=2,
        device="cpu",
    )
    return FinetuneConfig(**{**settings, **overrides})


def zero_positions(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    return {k: v == 0 for k, v in state.items() if k.endswith("proj.weight")}


@pytest.mark.parametrize("optimizer", ["sam-adamw", "asam-adamw", "adamw"])
def test_finetune_keeps_sparsity_exactly_and_extends_the_report(
    pruned_dir, text_file, tmp_path, optimizer
):
    cfg = config(pruned_dir, text_file, tmp_path, optimizer=optimizer)
    section = finetune(cfg, progress=False)
    out = tmp_path / "out"
    before, after = zero_positions(pruned_dir), zero_positions(out)
    assert before.keys() == after.keys() and len(before) == 14  # 7 Linear x 2 blocks
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert section["sparsity"]["zeros_before"] == section["sparsity"]["zeros_after"] > 0

    report = json.loads((out / "report.json").read_text())
    assert report["summary"] == {"sparsity": 0.5}
    assert "evaluation" not in report  # measured on the model before fine-tuning
    ft = report["finetune"]
    assert ft["source_evaluation"]["perplexity"]["after"] == 30.0
    assert ft["config"]["optimizer"] == optimizer
    assert ft["config"]["rho"] == {"sam-adamw": 0.05, "asam-adamw": 0.5, "adamw": 0.05}[optimizer]
    assert [h["step"] for h in ft["history"]["heldout"]] == [0, 2, 3]
    assert len(ft["history"]["train"]) == 3
    assert ft["tokens"] == 3 * 2 * 2 * 32
    assert ft["heldout"]["after"]["perplexity"] > 1
    assert (out / "recipe.json").is_file() and not (out / "checkpoint").exists()
    assert not (tmp_path / ".out.partial").exists()
    with pytest.raises(BadInputError, match="not empty"):
        finetune(cfg, progress=False)


@pytest.mark.slow
def test_bf16_folder_stays_bf16_with_bf16_autocast(pruned_dir, text_file, tmp_path):
    from safetensors.torch import load_file

    from compress.model.loading import load_model

    bf16_dir = tmp_path / "bf16"
    loaded = load_model(str(pruned_dir), device="cpu", dtype="bfloat16")
    loaded.model.save_pretrained(bf16_dir, safe_serialization=True)
    loaded.tokenizer.save_pretrained(bf16_dir)
    cfg = config(bf16_dir, text_file, tmp_path, optimizer="sam-adamw", precision="bf16")
    section = finetune(cfg, progress=False)
    assert section["autocast"] == "bfloat16"
    state = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    before = zero_positions(pruned_dir)
    for name, zeros in zero_positions(tmp_path / "out").items():
        assert torch.equal(zeros, before[name]), name


@pytest.mark.slow
def test_training_lowers_the_loss(pruned_dir, text_file, tmp_path):
    cfg = config(pruned_dir, text_file, tmp_path, steps=6, lr=3e-3, eval_every=6)
    section = finetune(cfg, progress=False)
    assert section["heldout"]["after"]["loss"] < section["heldout"]["before"]["loss"]


@pytest.mark.slow
def test_resume_after_a_crash_gives_the_uninterrupted_result(
    pruned_dir, text_file, tmp_path, monkeypatch
):
    straight = config(
        pruned_dir, text_file, tmp_path / "a", steps=4, save_every=2, optimizer="sam-adamw"
    )
    finetune(straight, progress=False)

    crashing = config(
        pruned_dir, text_file, tmp_path / "b", steps=4, save_every=2, optimizer="sam-adamw"
    )
    original = FinetuneRun.train_one

    def train_one(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(FinetuneRun, "train_one", train_one)
    with pytest.raises(KeyboardInterrupt):
        finetune(crashing, progress=False)
    assert (tmp_path / "b" / ".out.partial" / "checkpoint" / "state.pt").is_file()
    assert not (tmp_path / "b" / "out").exists()  # nothing half-written at the target
    monkeypatch.setattr(FinetuneRun, "train_one", original)

    changed = config(
        pruned_dir,
        text_file,
        tmp_path / "b",
        steps=4,
        save_every=2,
        optimizer="sam-adamw",
        lr=5e-4,
        resume=True,
    )
    with pytest.raises(BadInputError, match="lr was 0.001"):
        finetune(changed, progress=False)
    resumed = config(
        pruned_dir,
        text_file,
        tmp_path / "b",
        steps=4,
        save_every=2,
        optimizer="sam-adamw",
        resume=True,
    )
    section = finetune(resumed, progress=False)
    assert section["resumed_from_step"] == 2

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "out" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "out" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_sparsity_masks_come_from_exact_zeros_in_block_linears(tiny_llama):
    layer = tiny_llama.model.layers[1].self_attn.o_proj
    with torch.no_grad():
        layer.weight[0, :3] = 0
        tiny_llama.model.embed_tokens.weight[0, 0] = 0  # outside the blocks: not masked
    masks = sparsity_masks(tiny_llama)
    assert list(masks) == [layer.weight]
    assert int((~masks[layer.weight]).sum()) == 3


def test_schedule_and_window_order():
    f = lr_lambda(FinetuneConfig(model="m", steps=10, warmup=2))
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.0)
    assert f(6) == pytest.approx(0.5)
    order = window_order(available=4, needed=10, seed=0)
    assert sorted(order[:4].tolist()) == [0, 1, 2, 3] and len(order) == 12


def test_bad_settings_fail_at_the_boundary():
    with pytest.raises(BadInputError, match="--grad-accum"):
        FinetuneConfig(model="m", grad_accum=0)
    with pytest.raises(BadInputError, match="--lr"):
        FinetuneConfig(model="m", lr=0)


def test_cli_runs_and_reports(pruned_dir, text_file, tmp_path):
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(pruned_dir),
            "--data",
            str(text_file),
            "--steps",
            "2",
            "--seqlen",
            "32",
            "--batch",
            "2",
            "--eval-windows",
            "2",
            "--optimizer",
            "sam-adamw",
            "--rho",
            "0.1",
            "--device",
            "cpu",
            "--output",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sam-adamw (rho 0.1): 2 steps" in result.output
    assert "held-out perplexity" in result.output
    assert json.loads((out / "report.json").read_text())["finetune"]["config"]["rho"] == 0.1


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(
        app, ["finetune", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "error:" in result.output


def test_cli_help_in_a_subprocess():
    for args in (["finetune", "--help"], ["eval", "sharpness", "--help"]):
        done = subprocess.run(
            [sys.executable, "-c", "from compress.cli.main import app; app()", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout
