"""The evaluate/inspect/export commands are built from their config dataclasses: every flag they
had before is still there, each declared once, and the choice lists come from one enum each."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from compress.app import evaluate, export, inspect
from compress.cli.main import app
from compress.core.options import build, options_of, to_argv
from exporters.bnb import ExportBnbConfig
from exporters.onnx import ExportOnnxConfig, OnnxExportConfig

# command -> (config, every flag the command took before the conversion, hidden ones included)
COMMANDS = {
    ("eval", "ppl"): (
        evaluate.PplConfig,
        "--dataset --split --seqlen --eval-windows --max-windows --batch-size --device --dtype "
        "--json",
    ),
    ("eval", "tasks"): (
        evaluate.TasksConfig,
        "--tasks --sample --limit --batch-size --device --dtype --num-fewshot --seed --source "
        "--output --overwrite --no-overwrite --dense --no-dense",
    ),
    ("eval", "all"): (
        evaluate.AllConfig,
        "--tasks --sample --limit --batch-size --device --dtype --num-fewshot --seed --source "
        "--dataset --seqlen --max-windows --overwrite --no-overwrite",
    ),
    ("eval", "compare"): (evaluate.CompareConfig, ""),
    ("eval", "sharpness"): (
        evaluate.SharpnessConfig,
        "--data --split --nsamples --seqlen --batch --power-iters --tol --probes --max-power "
        "--seed --device --output",
    ),
    ("info",): (inspect.InfoConfig, "--layers --by-type --errors --plot"),
    ("export", "onnx"): (
        ExportOnnxConfig,
        "--output -o --with-past --no-past --quantize --opset --eval-source --eval-windows "
        "--eval-seqlen --overwrite --no-overwrite",
    ),
    ("export", "bnb"): (
        ExportBnbConfig,
        "--output -o --quantize --device --eval-dataset --eval-seqlen --eval-windows "
        "--overwrite --no-overwrite",
    ),
    ("run-onnx",): (export.RunOnnxConfig, "--max-new-tokens --int8 --no-int8"),
    ("card",): (export.CardConfig, "--check --repo-id"),
    ("push",): (
        export.PushConfig,
        "--repo-id --private --no-private --revision --commit-message",
    ),
}


def _click_command(path: tuple[str, ...]):
    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    return group


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_command_takes_exactly_its_configs_options_and_every_old_flag(path):
    config, flags = COMMANDS[path]
    params = _click_command(path).params
    assert [p.name for p in params] == [opt.name for opt in options_of(config)]
    declared = {flag for p in params for flag in (*p.opts, *p.secondary_opts) if flag[0] == "-"}
    assert set(flags.split()) <= declared  # every flag it had (bools may gain a --no- form)


def test_deprecated_max_windows_is_hidden_and_still_counts():
    params = {p.name: p for p in _click_command(("eval", "ppl")).params}
    assert params["max_windows"].hidden
    assert build(evaluate.PplConfig, {"max_windows": 3, "eval_windows": 9}).windows == 3
    assert build(evaluate.PplConfig, {"eval_windows": 9}).windows == 9


def test_non_default_configs_render_to_their_flags():
    tasks = evaluate.TasksConfig(
        model="m",
        run=evaluate.TaskRun(
            tasks="rte", settings=evaluate.TaskSettings(sample=5, seed=1), overwrite=True
        ),
        dense=True,
    )
    assert to_argv(tasks) == [
        "m", "--tasks", "rte", "--sample", "5", "--seed", "1", "--overwrite", "--dense",
    ]  # fmt: skip
    onnx = ExportOnnxConfig(
        folder="d", onnx=OnnxExportConfig(with_past=False, quantize="int8-weights")
    )
    assert to_argv(onnx) == ["d", "--no-past", "--quantize", "int8-weights"]


def test_choice_lists_come_from_one_enum_each():
    from compress.core.shared_options import Split
    from compress.data.calibration import SPLITS
    from exporters.bnb import SCHEMES, BnbScheme
    from exporters.onnx import QUANTIZATIONS, Quantization
    from exporters.onnx.quantize import METHODS

    assert tuple(METHODS) == QUANTIZATIONS == tuple(m.value for m in Quantization)
    assert tuple(SCHEMES) == tuple(s.value for s in BnbScheme)
    assert SPLITS == tuple(s.value for s in Split)


def test_building_every_command_loads_no_heavy_library():
    code = (
        "import sys, compress.cli.main\n"
        "heavy = {'torch', 'transformers', 'optimum', 'onnxruntime'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
