"""``compress prune --help`` reads at 80 columns in panels, and ``--recipe`` runs a recorded
recipe.json again through the real parser, flags given beside it winning."""

from __future__ import annotations

import json
import types
import typing
from enum import Enum
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compress.cli.main import app
from compress.core.config import (
    CalibrationConfig,
    EvalConfig,
    PruneConfig,
    PrunerOptions,
    ReconstructConfig,
)
from compress.core.methods import METHODS
from compress.core.options import Option, options_of, to_argv
from compress.core.quantization import QuantizeConfig

PANELS = (
    "Pruning",
    "Sparsity profile",
    "Calibration",
    "Reconstruction",
    "Quantization",
    "Evaluation",
    "Placement",
    "Output and Hub",
)


def _help(width: int = 80) -> str:
    result = CliRunner().invoke(
        app, ["prune", "--help"], env={"COLUMNS": str(width)}, terminal_width=width
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_prune_help_reads_at_80_columns_in_panels():
    lines = _help().splitlines()
    assert len(lines) <= 240, len(lines)  # a few lines per option (about 60 options)
    titles = [line.split("─ ", 1)[1].split(" ─")[0] for line in lines if line.startswith("╭─ ")]
    assert [title for title in titles if title in PANELS] == list(PANELS)
    assert max(len(line) for line in lines) <= 80
    assert "…" not in "".join(lines)  # no flag or help cut short
    text = "\n".join(lines)
    for opt in options_of(PruneConfig):
        assert opt.spec.argument or opt.flag in text, opt.flag
    for negative in ("--no-recon-early-stop", "--no-trust-remote-code", "--recon-batch"):
        assert negative in text  # a switch's off form and an alias stay listed


def test_every_prune_option_but_the_model_is_in_a_named_panel():
    assert PruneConfig.PANELS == PANELS
    for opt in options_of(PruneConfig):
        assert opt.panel in PANELS or opt.spec.argument, opt.flag


def test_options_without_a_panel_keep_typer_s_default_panel():
    result = CliRunner().invoke(app, ["eval", "ppl", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "─ Options ─" in result.output


# -- --recipe -----------------------------------------------------------------------------------
# Options whose values only make sense in a given form; any other gets a generic other value.
SPECIAL = {
    "model": "some-org/some-model",
    "pattern": "unstructured",  # 2:4 fixes --sparsity: its own config below
    "self_gen": "7",
    "skip": ["*.q_proj", "*.mlp.down_proj"],
    "layer_sparsity": {"*.down_proj": 0.3, "model.layers.0.*": 0.125},
    "sparsity_profile": "uniform",  # owl refuses --layer-sparsity: its own config below
    "output": "elsewhere/model",
    "hub_repo_id": "me/pruned",
    "device": "cuda:1",
    "device_map": "auto",
    "max_memory": "0=20GiB,cpu=64GiB",
}


def _other(opt: Option):
    """A valid value of ``opt`` other than its default."""
    if opt.name in SPECIAL:
        return SPECIAL[opt.name]
    kinds = [kind for kind in typing.get_args(opt.annotation) if kind is not type(None)]
    is_union = typing.get_origin(opt.annotation) in (typing.Union, types.UnionType)
    kind = kinds[0] if is_union else opt.annotation
    if isinstance(kind, type) and issubclass(kind, Enum):
        return next(member.value for member in kind if member != opt.default)
    if kind is bool:
        return not opt.default
    if kind is int:
        return (opt.default or 0) + 3
    if kind is float:
        return opt.default / 2 if opt.default else 1e-3
    if kind is str:
        return f"{opt.default or 'some'}-text"
    raise AssertionError(f"give {opt.flag} a value in SPECIAL")


def _record(values: dict[tuple[str, ...], object]) -> dict:
    record: dict = {}
    for path, value in values.items():
        where = record
        for part in path[:-1]:
            where = where.setdefault(part, {})
        where[path[-1]] = value
    return record


def _configs() -> list[PruneConfig]:
    """Configs that between them set every option to something other than its default: the
    options of one method are set with that method (another method's are refused)."""
    method = next(opt for opt in options_of(PruneConfig) if opt.name == "method")
    chosen = _other(method)
    everything = _record(
        {
            opt.path: _other(opt)
            for opt in options_of(PruneConfig)
            if opt.path[0] != "pruner" or opt.path[1] == chosen
        }
    )
    structured = {"pattern": "2:4"}
    profile = {"sparsity_profile": "owl", "owl_m": 3.0, "owl_lambda": 0.05}
    methods = [
        {"method": name, "pruner": {name: {o.path[-1]: _other(o) for o in options_of(cls)}}}
        for name, cls in METHODS.items()
        if name != chosen and any(options_of(cls))
    ]
    return [_build(record) for record in (everything, structured, profile, *methods)]


CONFIG_IDS = ["every-option", "2:4", "owl"]
CONFIG_IDS += [f"{m}-options" for m in METHODS if m != "magnitude" and any(options_of(METHODS[m]))]


def _build(record: dict) -> PruneConfig:
    subs = {"calibration": CalibrationConfig, "reconstruct": ReconstructConfig}
    subs["evaluation"] = EvalConfig
    subs["pruner"] = lambda **by_method: PrunerOptions(
        **{name: METHODS[name](**values) for name, values in by_method.items()}
    )
    kwargs = {key: subs[key](**value) if key in subs else value for key, value in record.items()}
    return PruneConfig(**kwargs)


def _at(record: dict, path: tuple[str, ...]):
    for part in path:
        record = record[part]
    return record


def _attempt_argv(config: PruneConfig) -> list[str]:
    """The flags of the options about one attempt (not taken from a recipe) that ``config``
    sets."""
    attempt = [opt.path for opt in options_of(PruneConfig) if not opt.spec.reproduce]
    values = {path: _at(config.to_dict(), path) for path in attempt}
    return to_argv(_record(values), PruneConfig)


def _parsed(args: list, monkeypatch) -> tuple[PruneConfig | None, object]:
    """The PruneConfig the real `compress prune` parser builds from ``args`` (nothing runs)."""
    seen: list = []
    monkeypatch.setattr(
        "compress.app.prune.run_prune", lambda config, **_: seen.append(config) or {}
    )
    monkeypatch.setattr("compress.cli.prune.summary_table", lambda report: "")
    result = CliRunner().invoke(app, ["prune", *map(str, args)])
    return (seen[0] if seen else None), result


def _replayed(config: PruneConfig) -> dict:
    """``config``'s record as ``--recipe`` alone replays it: the options about one attempt
    (``--overwrite``, ``--resume``, ``--push-to-hub``, ...) at their defaults."""
    record, defaults = config.to_dict(), PruneConfig().to_dict()
    for opt in options_of(PruneConfig):
        if not opt.spec.reproduce:
            assert len(opt.path) == 1  # all on PruneConfig itself
            record[opt.path[0]] = defaults[opt.path[0]]
    return record


def _write(folder: Path, config: PruneConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {**config.to_dict(), "versions": {"torch": "2.9.0"}}  # as prune writes it
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=2))
    return folder


def test_the_configs_set_every_option():
    defaults = PruneConfig().to_dict()
    records = [config.to_dict() for config in _configs()]
    for opt in options_of(PruneConfig):
        path = ".".join(opt.path)
        assert any(_at(r, opt.path) != _at(defaults, opt.path) for r in records), path


def test_the_configs_are_named():
    assert len(CONFIG_IDS) == len(_configs())


@pytest.mark.parametrize("which", range(len(CONFIG_IDS)), ids=CONFIG_IDS)
def test_recipe_round_trips_every_option_through_the_parser(which, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the outputs named are relative
    config = _configs()[which]
    folder = _write(tmp_path / "run", config)
    again, result = _parsed(["--recipe", folder, *_attempt_argv(config)], monkeypatch)
    assert again is not None, result.output
    assert again.to_dict() == config.to_dict()
    by_file, result = _parsed(["--recipe", folder / "recipe.json"], monkeypatch)
    assert by_file is not None, result.output
    assert by_file.to_dict() == _replayed(config)  # --overwrite, --resume, ...: not replayed


def test_flags_beside_the_recipe_override_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _configs()[0]
    folder = _write(tmp_path / "run", config)
    args = ["--recipe", folder, "--sparsity", "0.4", "--no-recon-early-stop", "--nsamples", "5"]
    again, result = _parsed([*args, "--skip", "*.k_proj", "other/model"], monkeypatch)
    assert again is not None, result.output
    expected = {**_replayed(config), "sparsity": 0.4, "model": "other/model", "skip": ["*.k_proj"]}
    expected["reconstruct"]["early_stop"] = False
    expected["calibration"]["nsamples"] = 5
    assert again.to_dict() == expected  # a repeatable flag replaces the recorded list


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a recipe"),
        ('{"method": "wanda", "frobnicate": 3, "calibration": {"zz": 1}}', "frobnicate, calibration.zz"),
        ('{"calibration": 5}', "calibration is not a section"),
        ('{"calibration": {"nsamples": "many"}}', "calibration.nsamples 'many'"),
        ('{"method": "obs"}', "method 'obs'"),
        ('{"sparsity": 1.5}', "--sparsity"),
    ],
    ids=["not-json", "not-object", "unknown-keys", "not-section", "bad-int", "bad-choice", "range"],
)  # fmt: skip
def test_a_bad_recipe_is_one_error_line(content, message, tmp_path, monkeypatch):
    path = tmp_path / "recipe.json"
    path.write_text(content)
    config, result = _parsed(["--recipe", path], monkeypatch)
    assert config is None and result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_missing_recipe_is_one_error_line(tmp_path, monkeypatch):
    config, result = _parsed(["--recipe", tmp_path], monkeypatch)  # a folder without one
    assert config is None and result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --recipe {tmp_path}: no such file or folder holding recipe.json"
    ]


def test_an_option_of_another_method_is_one_error_line(monkeypatch):
    for args, message in [
        (["--sparsegpt-damp", "0.05"], "--sparsegpt-damp applies to --method sparsegpt only"),
        (["--method", "magnitude", "--sparsegpt-blocksize", "64"], "--sparsegpt-blocksize"),
        (["--method", "sparsegpt", "--magnitude-scope", "row"], "--method magnitude only"),
    ]:
        config, result = _parsed(args, monkeypatch)
        assert config is None and result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_recipe_with_the_earlier_top_level_magnitude_scope_still_loads(tmp_path, monkeypatch):
    old = {**PruneConfig(method="magnitude").to_dict(), "magnitude_scope": "row"}
    del old["pruner"]
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    config, result = _parsed(["--recipe", tmp_path], monkeypatch)
    assert config is not None, result.output
    assert config.pruner.magnitude.scope.value == "row"
    wanda = {**PruneConfig().to_dict(), "magnitude_scope": None}  # how wanda recorded it
    (tmp_path / "recipe.json").write_text(json.dumps(wanda))
    config, result = _parsed(["--recipe", tmp_path], monkeypatch)
    assert config is not None and config.to_dict() == PruneConfig().to_dict(), result.output


def test_a_recorded_command_names_only_its_method_s_options():
    for method in METHODS:
        quantize = QuantizeConfig(bits="int4") if method == "none" else QuantizeConfig()
        recon = ReconstructConfig(technique="lr")
        config = PruneConfig(method=method, quantize=quantize, reconstruct=recon)
        argv = to_argv(config.to_dict(), PruneConfig, complete=True)
        flags = {opt.flag for opt in options_of(METHODS[method])}
        others = {opt.flag for m in METHODS if m != method for opt in options_of(METHODS[m])}
        assert flags <= set(argv) and not others & set(argv), (method, argv)
