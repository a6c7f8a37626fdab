"""``compress cbm``: every command end to end on a tiny model, failure paths, and ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from compress.cli.main import app

runner = CliRunner()
TINY_OPTIONS = [
    "--option", "n_concepts=12", "--option", "n_classes=8", "--option", "n_similar=4",
    "--option", "samples_per_class=30", "--option", "input_dim=16", "--option", "z_std=1.0",
    "--option", "concept_groups=4",
]  # fmt: skip


def invoke(*args: str):
    return runner.invoke(app, ["cbm", *args])


def test_train_then_intervene_with_costs(tmp_path):
    folder = tmp_path / "model"
    result = invoke(
        "train",
        "-o",
        str(folder),
        "--epochs",
        "40",
        "--lr",
        "0.01",
        "--concept-hidden",
        "16",
        *TINY_OPTIONS,
    )
    assert result.exit_code == 0, result.output
    assert "test task error" in result.output
    meta = json.loads((folder / "cbm.json").read_text())
    assert meta["data"]["options"]["n_concepts"] == 12 and meta["model"]["variant"] == "IND"

    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({f"c{i}": 1 + i % 3 for i in range(12)}))
    result = invoke(
        "intervene", str(folder), "--criteria", "rand,ucp,ectp", "--level", "individual,group",
        "--max-interventions", "3", "--costs", str(costs), "--scope", "batch", "--batch-size", "8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = folder / "interventions"
    for name in ("curves.json", "curves.csv", "curves.png", "curves_cost.png"):
        assert (out / name).stat().st_size > 0
    curves = json.loads((out / "curves.json").read_text())["models"]["model"]
    assert [(c["criterion"], c["level"]) for c in curves][:4] == [
        ("rand", "individual"), ("ucp", "individual"), ("ectp", "individual"), ("rand", "group"),
    ]  # fmt: skip
    assert curves[0]["concepts"] == [0.0, 1.0, 2.0, 3.0]
    assert len((out / "curves.csv").read_text().splitlines()) == 1 + 6 * 4


def test_compare_and_prune(tiny_folder, tmp_path):
    other = tmp_path / "jnt"
    result = invoke("train", "-o", str(other), "--variant", "JNT", "--epochs", "5", *TINY_OPTIONS)
    assert result.exit_code == 0, result.output
    result = invoke(
        "compare", str(tiny_folder), str(other), "-o", str(tmp_path / "cmp"),
        "--criteria", "ucp", "--max-interventions", "2", "--values", "class",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    models = json.loads((tmp_path / "cmp" / "curves.json").read_text())["models"]
    assert list(models) == ["ind", "jnt"]

    pruned = tmp_path / "pruned"
    result = invoke(
        "prune", str(tiny_folder), "-o", str(pruned), "--method", "sparsegpt", "--sparsity", "0.5",
        "--criteria", "rand,lcp", "--max-interventions", "2", "--sam-epochs", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((pruned / "cbm.json").read_text())
    assert meta["prune"]["method"] == "sparsegpt" and meta["prune"]["sam"]["epochs"] == 1
    assert all(
        layer["sparsity"] == pytest.approx(0.5) for layer in meta["prune"]["layers"].values()
    )
    models = json.loads((pruned / "interventions" / "curves.json").read_text())["models"]
    assert list(models) == ["dense", "pruned"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["intervene", "{missing}"], "has no cbm.json"),
        (["intervene", "{model}", "--criteria", "oracle"], "criteria ['oracle'] unknown"),
        (["intervene", "{model}", "--level", "pixel"], "--level 'pixel'"),
        (["train", "-o", "{out}", "--option", "z_std"], "KEY=VALUE"),
        (["train", "-o", "{out}", "--data", "cub"], "--data-path"),
        (["train", "-o", "{model}"], "--overwrite"),
        (["prune", "{model}", "-o", "{out}", "--pattern", "3:2"], "0 < N < M"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny_folder, tmp_path, args, message):
    paths = {
        "missing": str(tmp_path / "none"),
        "model": str(tiny_folder),
        "out": str(tmp_path / "o"),
    }
    result = runner.invoke(app, ["cbm", *[a.format(**paths) for a in args]])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("command", ["train", "intervene", "compare", "prune"])
def test_command_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_group_help_in_a_subprocess():
    code = "from compress.cli.main import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "cbm", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for command in ("train", "intervene", "compare", "prune"):
        assert command in done.stdout


@pytest.mark.parametrize("flag, rescore", [([], False), (["--rescore"], True)])
def test_intervene_records_the_ranking_protocol(tiny_folder, flag, rescore):
    result = invoke(
        "intervene", str(tiny_folder), "--criteria", "ectp", "--max-interventions", "2", *flag
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tiny_folder / "interventions" / "curves.json").read_text())
    assert saved["config"]["rescore"] is rescore


KEEL_IRIS = (
    "@relation iris\n@attribute SepalLength real [4.3, 7.9]\n@inputs SepalLength\n@data\n"
    "5.1, 3.5, 1.4, 0.2, Iris-setosa\n4.9, 3.0, 1.4, 0.2, Iris-setosa\n"
)
KEEL_EIGHT = "85.0, 92.0, 45.0, 27.0, 31.0, 0.0, 1.0, 1\n"  # 8 numbers, but not segments


@pytest.mark.parametrize(
    "text, message",
    [(KEEL_IRIS, "line 5 has 5 columns"), (KEEL_IRIS.replace(", Iris-setosa", ", a, b, c, d"),
     "non-numbers"), (KEEL_EIGHT, "out of range"), ("@relation empty\n", "no data rows")],
)  # fmt: skip
def test_led7digit_file_of_another_shape_is_one_error_line(tmp_path, text, message):
    keel = tmp_path / "other.dat"
    keel.write_text(text)
    out = tmp_path / "model"
    result = invoke("train", "-o", str(out), "--data", "led7digit", "--data-path", str(keel))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()  # nothing half-written


def test_train_help_shows_the_training_config_defaults():
    """The options come from TrainConfig/CBMConfig, so --help shows their real defaults."""
    result = runner.invoke(app, ["cbm", "train", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for text in ("[default: 60]", "[default: 128]", "[default: 0.001]", "IND|SEQ|JNT|JNT+P"):
        assert text in result.output, text


def test_cli_builds_its_commands_without_torch():
    code = "import sys, compress.cli.main; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
