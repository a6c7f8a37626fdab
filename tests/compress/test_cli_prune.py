"""`compress prune` end to end on a tiny local model, and every bad input."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_prune_tiny_model_writes_everything(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    result = run(
        "prune",
        tiny_model_dir,
        "--method",
        "sparsegpt",
        "--pattern",
        "2:4",
        "--output",
        out,
        "--eval",
        "--eval-windows",
        "2",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "recipe.json",
        "report.json",
    } <= names
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["sparsity"] == 0.5 and report["summary"]["pattern"] == "2:4"
    assert all(layer["sparsity"] == 0.5 for layer in report["layers"].values())
    ppl = report["evaluation"]["perplexity"]
    assert 0 < ppl["before"] < float("inf") and ppl["windows"] == 2
    assert ppl["split"] == "test" and ppl["protocol"]["name"].startswith("compress-documents")
    assert report["calibration"]["holdout"]["split"] == "validation"  # disjoint from ppl's text
    assert report["calibration"]["sources"][0]["tokens"] == 4 * 32
    assert json.loads((out / "recipe.json").read_text())["calibration"]["seed"] == 0
    assert not (tmp_path / ".out.partial").exists()
    info = run("info", out)
    assert info.exit_code == 0 and "q_proj" in info.output


def bad_inputs(tiny_model_dir, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"]})
    )
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("finished work")
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    return {
        "offline-id": (["some-org/no-such-model"], "could not be found"),
        "missing-path": (["./no/such/folder"], "does not exist"),
        "architecture": ([bert], "not supported; supported: gemma"),
        "sparsity": ([tiny_model_dir, "--sparsity", "1.0"], "must lie in [0, 1)"),
        "n-ge-m": ([tiny_model_dir, "--pattern", "4:4"], "0 < N < M"),
        "width": ([tiny_model_dir, "--pattern", "3:7"], "not divisible by M=7"),
        "short-calib": ([tiny_model_dir, "--calib", short], "fewer than nsamples x seqlen"),
        "seqlen": ([tiny_model_dir, "--seqlen", "512"], "exceeds the model's context of 256"),
        "output-exists": ([tiny_model_dir, "--output", full], "exists and is not empty"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "offline-id",
        "missing-path",
        "architecture",
        "sparsity",
        "n-ge-m",
        "width",
        "short-calib",
        "seqlen",
        "output-exists",
    ],
)
def test_bad_input_one_line_exit_2(case, tiny_model_dir, tmp_path):
    args, message = bad_inputs(tiny_model_dir, tmp_path)[case]
    out = tmp_path / "out"
    if "--output" not in args:
        args = [*args, "--output", out]
    result = run("prune", *FAST, *args)  # later flags win, so the case overrides FAST
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
    if case == "output-exists":
        assert (tmp_path / "full" / "keep.txt").read_text() == "finished work"


@pytest.mark.parametrize("command", [[], ["prune"], ["info"], ["eval", "ppl"]])
def test_help_in_subprocess(command):
    result = subprocess.run(
        [sys.executable, "-m", "compress.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.slow
def test_reconstruction_errors_table_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "br"
    result = run(
        "prune",
        tiny_model_dir,
        "--reconstruct",
        "br+gp",
        "--recon-epochs",
        "1",
        "--holdout-nsamples",
        "2",
        "--output",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    errors = report["blocks"][0]["errors"]
    assert set(errors["after_reconstruction"]) == {"calibration", "holdout"}
    assert report["calibration"]["holdout"]["split"] == "validation"
    table = run("info", out, "--errors", "--plot", tmp_path / "errors.png")
    assert table.exit_code == 0 and "held-out after" in table.output
    assert (tmp_path / "errors.png").stat().st_size > 1000
    plain = tmp_path / "plain"
    assert (
        run("prune", tiny_model_dir, "--reconstruct", "lr", "--output", plain, *FAST).exit_code == 0
    )
    missing = run("info", plain, "--errors")
    assert missing.exit_code == 2 and "no per-block errors" in missing.stderr


@pytest.mark.slow
def test_self_generated_windows_mix_with_real(tiny_model_dir, tmp_path):
    from compress.data.calibration import load_texts

    texts = load_texts("wikipedia", "test")[:6]
    lines = [
        {"text": text, "seed": i, "tokens": 0, "lang": "en", "lang_score": 1.0}
        for i, text in enumerate(texts)
    ]
    selfgen = tmp_path / "selfgen.jsonl"
    selfgen.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "mixed"
    result = run(
        "prune",
        tiny_model_dir,
        "--self-gen",
        selfgen,
        "--reconstruct",
        "br",
        "--recon-epochs",
        "1",
        "--output",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    calibration = json.loads((out / "report.json").read_text())["calibration"]
    kinds = {source["kind"]: source for source in calibration["sources"]}
    assert kinds["real"]["nsamples"] == 4 and kinds["self-generated"]["nsamples"] == 6
    assert calibration["stats_from"] == "real"
    only = run(
        "prune",
        tiny_model_dir,
        "--calib",
        "none",
        "--self-gen",
        selfgen,
        "--output",
        tmp_path / "only",
        *FAST,
    )
    assert only.exit_code == 0, only.output
    bad = run("prune", tiny_model_dir, "--calib", "none", "--output", tmp_path / "bad", *FAST)
    assert bad.exit_code == 2 and "needs --self-gen" in bad.stderr


def test_eval_ppl_scores_a_text_file_whole_with_two_decimals(tiny_model_dir, tmp_path, tokenizer):
    text = tmp_path / "mine.txt"
    text.write_text("\n\n".join(f"My own paragraph number {i} of the file." for i in range(40)))
    whole = len(tokenizer("\n\n".join(text.read_text().split("\n\n")))["input_ids"]) // 16
    common = ["eval", "ppl", tiny_model_dir, "--dataset", text, "--seqlen", 16, "--device", "cpu"]
    result = run(*common, "--json", tmp_path / "all.json")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "all.json").read_text())
    assert record["split"] == "all" and record["windows"] == whole > 30
    assert f"{record['perplexity']:.2f}" in result.stdout.strip().splitlines()[-1]
    for flags, windows in [(["--eval-windows", 3], 3), (["--max-windows", 2], 2)]:
        result = run(*common, *flags, "--json", tmp_path / "few.json")
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "few.json").read_text())["windows"] == windows
    result = run(*common, "--split", "test", "--json", tmp_path / "test.json")
    assert json.loads((tmp_path / "test.json").read_text())["windows"] < whole / 5


def test_sparsegpt_options_from_the_cli_reach_the_pruner(monkeypatch):
    """--sparsegpt-blocksize / --sparsegpt-damp: the engine builds each pruner with them."""
    import types

    import torch

    from compress.engine.steps import Engine

    seen = []
    monkeypatch.setattr("compress.app.prune.run_prune", lambda config, **_: seen.append(config))
    monkeypatch.setattr("compress.cli.prune.summary_table", lambda report: "")
    args = [
        "prune",
        "--method",
        "sparsegpt",
        "--sparsegpt-blocksize",
        "16",
        "--sparsegpt-damp",
        "0.05",
    ]
    result = runner.invoke(app, args)
    assert seen, result.output
    engine = types.SimpleNamespace(config=seen[0])
    layers = {"q": torch.nn.Linear(8, 4), "k": torch.nn.Linear(8, 4)}
    pruners = Engine._pruners(engine, [["q", "k"]], layers)
    assert {(p.blocksize, p.percdamp) for p in pruners.values()} == {(16, 0.05)}
