"""What the output folder and its card must get right: self-generated texts kept and
reused, the card naming the final folder, a reproduce command that parses back to the recipe,
and per-layer sparsity measured in the saved weights, grouped one way everywhere."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from enum import Enum

import pytest
import torch
import typer
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from compress.algorithms import distributed
from compress.cli.main import app
from compress.cli.prune import prune
from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.io import work_folder, write_json_atomic
from compress.core.report import REPORT_NAME
from compress.data import selfgen
from compress.engine import WorkFolder

FAST = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2", "--device", "cpu"]


class _English:
    """Stands in for py3langid: a random model's text is never English."""

    labels = ("en",)

    def classify(self, text: str) -> tuple[str, float]:
        return "en", 1.0


@pytest.fixture
def english(monkeypatch):
    monkeypatch.setattr(selfgen.inspection, "_identifier", lambda: _English())


def selfgen_config(model_dir, out) -> PruneConfig:
    return PruneConfig(
        model=str(model_dir),
        calibration=CalibrationConfig(nsamples=4, seqlen=32, batch_size=2, self_gen="4"),
        reconstruct=ReconstructConfig(technique="lr"),
        device="cpu",
        output=str(out),
        checkpoint_every=0,  # a checkpoint after every block, so the crash below leaves one
    )


class Crash(Exception):
    pass


def crash_after_first_block(done: int, total: int, tokens_per_second: float) -> None:
    if done == 1:
        raise Crash


# -- --self-gen N ------------------------------------------------------------------------------
def test_self_generated_texts_reach_the_output(tiny_model_dir, tmp_path, english):
    from compress.app.prune import run_prune

    out, logs = tmp_path / "out", []
    report = run_prune(selfgen_config(tiny_model_dir, out), log=logs.append)
    lines = (out / "selfgen.jsonl").read_text().splitlines()
    kinds = [s["kind"] for s in report["calibration"]["sources"]]
    assert kinds == ["real", "self-generated"] and len(lines) >= 4
    rates = [m for m in logs if m.startswith("self-generated")]
    assert rates and "accepted texts/s" in rates[0] and "rejected" in rates[0]
    generation = report["calibration"]["sources"][1]["generation"]
    assert generation["texts"] == len(lines) and generation["draws"] >= generation["added"] >= 4
    assert generation["tokens_per_second"] == generation["tokens"] / generation["seconds"] > 0
    assert "generation" not in report["calibration"]["sources"][0]


def test_self_gen_n_is_n_windows_and_the_record_names_the_shipped_file(
    tiny_model_dir, tmp_path, english
):
    """Before this test, --help said "N texts the model writes now" while N counted
    windows (the model wrote 5 texts for --self-gen 2), and report.json named the source
    ``out/.m.work/selfgen.jsonl``, a staging path gone after the run."""
    out = tmp_path / "m"
    args = ["prune", tiny_model_dir, "--output", out, *FAST, "--reconstruct", "lr"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--self-gen", "2"]])
    assert result.exit_code == 0, result.output
    report = json.loads((out / REPORT_NAME).read_text())
    source = report["calibration"]["sources"][1]
    kept = (out / "selfgen.jsonl").read_text().splitlines()
    assert source["source"] == "selfgen.jsonl" and source["nsamples"] == 2
    assert source["generation"]["texts"] == len(kept) >= 2
    card = (out / "README.md").read_text()
    assert f"{len(kept)} were kept, and one window of 32 tokens was taken from each of 2" in card
    assert ".m.work" not in card and ".m.work" not in json.dumps(report)
    assert "until 2 reach 32 tokens" in result.stderr
    help_text = CliRunner().invoke(app, ["prune", "--help"]).output.replace("│", " ")
    help_text = " ".join(help_text.split())
    assert "N windows of --seqlen tokens, one from each of N texts" in help_text


def test_self_gen_batch_sets_the_decoding_rows_apart_from_batch_size(
    tiny_model_dir, tmp_path, english, monkeypatch
):
    """--self-gen-batch is the generation's batch; --batch-size stays the forward's."""
    from compress.app.prune import run_prune

    seen = []
    generate = selfgen.generate_long_texts

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(selfgen, "generate_long_texts", spy)
    config = selfgen_config(tiny_model_dir, tmp_path / "out")
    config = replace(config, calibration=replace(config.calibration, self_gen_batch=3))
    run_prune(config, log=lambda m: None)
    assert seen == [3] and config.calibration.batch_size == 2


def test_self_gen_batch_below_one_is_refused_in_one_line():
    from compress.core.errors import BadInputError

    with pytest.raises(BadInputError, match="^--self-gen-batch must be at least 1, got 0$"):
        CalibrationConfig(self_gen="4", self_gen_batch=0)


def test_resume_reuses_the_self_generated_texts(tiny_model_dir, tmp_path, english, monkeypatch):
    from compress.app.prune import run_prune

    out = tmp_path / "out"
    config = selfgen_config(tiny_model_dir, out)
    with pytest.raises(Crash):
        run_prune(config, on_block=crash_after_first_block, log=lambda m: None)
    work = work_folder(out)
    assert json.loads((work / "state.json").read_text())["next_block"] == 1
    generated = (work / "selfgen.jsonl").read_text()  # the checkpoint kept it

    def no_generation(*args, **kwargs):
        raise AssertionError("--resume generated the calibration texts again")

    first = json.loads((work / "selfgen-stats.json").read_text())
    monkeypatch.setattr(selfgen.generate, "decode", no_generation)
    report = run_prune(replace(config, resume=True), log=lambda m: None)
    assert (out / "selfgen.jsonl").read_text() == generated
    # the report counts the first attempt's generation, not the resumed call's zero texts
    assert report["calibration"]["sources"][1]["generation"]["added"] == first["added"] > 0


@pytest.mark.parametrize("main", [True, False])
def test_one_rank_writes_the_self_generated_texts(tiny_model_dir, tmp_path, monkeypatch, main):
    """Under --distributed rank 0 generates and the others wait, then read its file."""
    from compress.app.prune import self_generated_windows
    from compress.data.calibration import load_texts
    from compress.model.loading import load_model

    loaded = load_model(str(tiny_model_dir), "cpu", "auto")
    config = selfgen_config(tiny_model_dir, tmp_path / "out")
    work = work_folder(tmp_path / "out")
    events = []

    def generate(model, tokenizer, path, *args, **kwargs):
        events.append("generate")
        texts = load_texts("wikipedia", "test")[:4]
        path.write_text(
            "".join(json.dumps({"text": t, "seed": i}) + "\n" for i, t in enumerate(texts))
        )
        return selfgen.GenerationStats(4, 4, 4, 0, 100, 1.0)

    if not main:  # what rank 0 wrote before the barrier
        work.mkdir(parents=True)
        generate(None, None, work / "selfgen.jsonl")
        events.clear()
    monkeypatch.setattr(distributed, "is_main", lambda: main)
    monkeypatch.setattr(distributed, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(selfgen, "generate_long_texts", generate)
    windows, generation = self_generated_windows(loaded, config, WorkFolder(work), lambda m: None)
    assert windows.ids.shape == (4, 32)
    assert (generation is not None) == main  # rank 0 alone writes the report
    assert events == (["generate", "barrier"] if main else ["barrier"])


# -- the card names the final folder -------------------------------------------------------------
def test_card_names_the_final_folder_not_the_staging_one(tiny_model_dir, tmp_path):
    out = tmp_path / "demo"
    args = ["prune", str(tiny_model_dir), "--reconstruct", "lr", "--output", str(out), *FAST]
    result = CliRunner().invoke(app, [*args, "--eval", "--eval-windows", "1"])  # a model-index
    assert result.exit_code == 0, result.output
    text = (out / "README.md").read_text()
    assert ".partial" not in text
    assert "\n# demo\n" in text
    assert yaml.safe_load(text.split("---")[1])["model-index"][0]["name"] == "demo"
    assert f'from_pretrained("{out}")' in text


# -- the reproduce command parses back to the recipe -------------------------------------------
ATTEMPT = ("overwrite", "resume", "checkpoint_every", "push_to_hub", "hub_repo_id")  # not results
REFUSED = ("load_in_8bit", "load_in_4bit")  # pruning refuses them: nothing to record
# A valid value other than the default for every option that is not a flag or a choice.
VALUES = {
    "model": ["some-org/some-model"],
    "sparsity": ["0.3"],
    "pattern": ["2:4"],
    "calib": ["lambada"],
    "self_gen": ["7"],
    "self_gen_batch": ["4"],
    "nsamples": ["9"],
    "seqlen": ["33"],
    "batch_size": ["3"],
    "seed": ["5"],
    "output": ["elsewhere/model"],
    "device": ["cuda:1"],
    "dtype": ["float16"],
    "skip": [["*.q_proj", "*.mlp.down_proj"]],
    "layer_sparsity": [["*.down_proj=0.3", "model.layers.0.*=0.125"]],
    "recon_epochs": ["3"],
    "recon_steps": ["7"],
    "checkpoint_every": ["0"],
    "owl_m": ["3"],
    "owl_lambda": ["0.05"],
    "recon_lr": ["0.001"],
    "recon_optimizer": ["sam"],
    "recon_rho": ["0.05"],
    "holdout": ["boolq"],
    "holdout_nsamples": ["4"],
    "activations_dtype": ["float16"],
    "activations_device": ["cpu"],
    "eval_dataset": ["lambada"],
    "eval_seqlen": ["64"],
    "eval_windows": ["0", "7"],  # 0: every window (None in the recipe)
    "device_map": ["auto"],
    "max_memory": ["0=20GiB,cpu=64GiB"],
    "offload_folder": ["offload"],
    "hub_repo_id": ["me/pruned"],
    "sparsegpt_blocksize": ["64"],
    "sparsegpt_damp": ["0.05"],
    "group_size": ["64"],
}
# options that only apply together with another one
NEEDS = {
    "magnitude_scope": ["--method", "magnitude"],
    "sparsegpt_blocksize": ["--method", "sparsegpt"],
    "sparsegpt_damp": ["--method", "sparsegpt"],
}


def prune_command():
    single = typer.Typer(add_completion=False)
    single.command()(prune)
    return typer.main.get_command(single)


def parsed_config(args: list[str], monkeypatch) -> PruneConfig:
    """The PruneConfig the real `compress prune` parser builds from ``args`` (nothing runs)."""

    class Parsed(Exception):
        pass

    def capture(config, **kwargs):
        raise Parsed(config)

    monkeypatch.setattr("compress.app.prune.run_prune", capture)
    result = CliRunner().invoke(app, ["prune", *args])
    assert isinstance(result.exception, Parsed), result.output
    return result.exception.args[0]


def settings(param) -> list[list[str]]:
    """Argument lists that set ``param`` to something other than its default."""
    if param.param_type_name == "argument":
        return [VALUES[param.name]]
    flag = param.opts[0]
    if param.is_flag:
        if param.default is None:
            return [[flag], [param.secondary_opts[0]]]
        return [[flag if not param.default else param.secondary_opts[0]]]
    if isinstance(param.default, Enum):
        other = next(c.value for c in type(param.default) if c != param.default)
        return [NEEDS.get(param.name, []) + [flag, other]]
    assert param.name in VALUES, f"give the round-trip test a value for {flag}"
    values = VALUES[param.name]
    return [
        NEEDS.get(param.name, [])
        + [a for v in (vs if isinstance(vs, list) else [vs]) for a in (flag, v)]
        for vs in values
    ]


def result_of(config: PruneConfig) -> dict:
    recipe = config.to_dict()
    for name in ATTEMPT:
        recipe.pop(name)
    return recipe


def test_reproduce_command_parses_back_to_the_recipe_for_every_option(monkeypatch):
    from cards.facts import reproduce_command

    # --recipe is no option of the config: test_cli_help.py runs recipes again
    params = [p for p in prune_command().params if p.name not in (*REFUSED, "recipe")]
    assert len(params) > 30
    for param in params:
        for args in settings(param):
            config = parsed_config(args, monkeypatch)
            assert config.to_dict() != PruneConfig().to_dict(), args  # the option took effect
            command = reproduce_command({"recipe": config.to_dict()})
            argv = shlex.split(command)
            assert argv[:2] == ["compress", "prune"] and "#" not in command, command
            again = parsed_config(argv[2:], monkeypatch)
            assert result_of(again) == result_of(config), (args, command)


def test_quantized_loading_is_refused_in_one_line():
    for name in REFUSED:
        result = CliRunner().invoke(app, ["prune", f"--{name.replace('_', '-')}"])
        assert result.exit_code == 2 and "cannot be used for pruning" in result.stderr


# -- per-layer sparsity: measured in the saved weights, one grouping ------------------------
def zero_one_more_weight(monkeypatch):
    """Reconstruction that also moves one kept weight of every layer to exactly zero (as a
    bf16/fp16 cast or an optimizer step can)."""
    import compress.engine.steps

    real = compress.engine.steps.reconstruct

    def reconstruct(params, masks, *args, **kwargs):
        result = real(params, masks, *args, **kwargs)
        with torch.no_grad():
            for weight, mask in masks.items():
                kept = mask.flatten().nonzero()
                weight.view(-1)[kept[len(kept) // 2]] = 0.0
        return result

    monkeypatch.setattr(compress.engine.steps, "reconstruct", reconstruct)


@pytest.mark.parametrize("technique", ["br", "br+gp+cr"])
def test_layer_sparsity_is_measured_in_the_saved_weights(
    tiny_model_dir, tmp_path, monkeypatch, technique
):
    zero_one_more_weight(monkeypatch)
    out = tmp_path / "out"
    args = ["prune", str(tiny_model_dir), "--reconstruct", technique, "--recon-epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--no-errors", "--output", str(out), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / REPORT_NAME).read_text())
    saved = load_file(out / "model.safetensors")
    for name, layer in report["layers"].items():
        weight = saved[f"{name}.weight"]
        assert layer["zeros"] == int((weight == 0).sum()), name
        assert layer["sparsity"] == layer["zeros"] / weight.numel(), name
    zeros = sum(layer["zeros"] for layer in report["layers"].values())
    numel = sum(layer["numel"] for layer in report["layers"].values())
    assert report["summary"]["sparsity"] == zeros / numel


def test_info_groups_layer_types_as_the_card_does(tmp_path):
    from cards.facts import sparsity_by_type

    layers = {}  # GPT-2: attn.c_proj and mlp.c_proj share their last name part
    for block in range(2):
        for kind, zeros in (
            ("attn.c_attn", 1),
            ("attn.c_proj", 2),
            ("mlp.c_fc", 3),
            ("mlp.c_proj", 4),
        ):
            layers[f"transformer.h.{block}.{kind}"] = {
                "target_sparsity": 0.5, "sparsity": zeros / 8, "zeros": zeros, "numel": 8,
            }  # fmt: skip
    write_json_atomic(tmp_path / REPORT_NAME, {"recipe": {"method": "wanda"}, "layers": layers})
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = result.output.split("-\n", 1)[1].splitlines()
    shown = {row.split()[0]: (int(row.split()[1]), float(row.split()[3])) for row in rows}
    card = {r["type"]: (r["layers"], r["sparsity"]) for r in sparsity_by_type(layers)}
    assert shown == card and set(shown) == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


def test_info_shows_per_block_targets_as_a_range(tmp_path):
    """A profile gives each block its own target: the type's row shows their span, not a list."""
    layers = {
        f"model.layers.{block}.mlp.up_proj": {
            "target_sparsity": target,
            "sparsity": target,
            "zeros": round(100 * target),
            "numel": 100,
        }
        for block, target in enumerate([0.62, 0.7, 0.74, 0.66])
    }
    write_json_atomic(tmp_path / REPORT_NAME, {"recipe": {"method": "wanda"}, "layers": layers})
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (row,) = result.output.split("-\n", 1)[1].splitlines()
    assert row.split()[:6] == ["mlp.up_proj", "4", "0.62", "to", "0.74", "0.68"]
