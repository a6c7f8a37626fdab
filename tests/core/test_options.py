"""Options declared on config fields: one declaration gives the command, its help and the
command line that reproduces a config."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from compress.core.options import build, command, option, options_of, to_argv


class Color(str, Enum):
    red = "red"
    blue = "blue"


def _pairs(items: list[str] | None) -> dict[str, float]:
    return {key: float(value) for key, value in (item.rsplit("=", 1) for item in items or [])}


@dataclass
class Inner:
    epochs: int = option(10, flags="--recon-epochs", help="Epochs.")
    errors: bool | None = option(None, flags="--errors", help="Errors.")


@dataclass
class Outer:
    model: str | None = option(None, argument=True, help="Model.")
    color: Color = option(Color.red, help="Colour.")
    skip: list[str] = option(
        default_factory=list,
        help="Skip.",
        cli_type=list[str] | None,
        from_cli=lambda v: list(v or []),
    )
    weights: dict[str, float] = option(
        default_factory=dict,
        flags="--weight",
        help="PATTERN=W.",
        cli_type=list[str] | None,
        to_cli=lambda d: [f"{k}={v}" for k, v in d.items()] or None,
        from_cli=_pairs,
    )
    overwrite: bool = option(False, help="Replace.")
    inner: Inner = field(default_factory=Inner)
    derived: int = 0  # no option metadata: not on the command line


def _app(seen: list) -> typer.Typer:
    app = typer.Typer()
    app.command("run")(command(Outer, seen.append, "Run it.", name="run"))
    app.command("noop")(lambda: None)  # a second command keeps "run" a subcommand
    return app


def test_options_walk_sub_configs_and_skip_internal_fields():
    names = [opt.name for opt in options_of(Outer)]
    assert names == ["model", "color", "skip", "weight", "overwrite", "recon_epochs", "errors"]


def test_round_trip_through_the_parser():
    seen: list = []
    config = Outer(
        model="m",
        color=Color.blue,
        skip=["a", "b"],
        weights={"x*": 0.3},
        overwrite=True,
        inner=Inner(epochs=3, errors=False),
    )
    argv = to_argv(config)
    assert argv[0] == "m" and "--no-errors" in argv and argv.count("--skip") == 2
    result = CliRunner().invoke(_app(seen), ["run", *argv])
    assert result.exit_code == 0, result.output
    assert seen == [config]


def test_defaults_render_to_nothing_and_parse_to_defaults():
    seen: list = []
    assert to_argv(Outer()) == []
    assert CliRunner().invoke(_app(seen), ["run"]).exit_code == 0
    assert seen == [Outer()]
    assert build(Outer, {}) == Outer()


def test_help_shows_the_declared_help_default_and_choices():
    result = CliRunner().invoke(_app([]), ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("Colour.", "red|blue", "--recon-epochs", "--no-errors", "default: 10"):
        assert text in result.output


@dataclass
class Required:
    folders: list[Path] = option(argument=True, help="Folders.")
    repo: str = option(flags="--repo", help="Repo.")
    layers: bool = option(False, flags="--layers", negative="--by-type", help="Per layer.")


def _required_app(seen: list) -> typer.Typer:
    app = typer.Typer()
    app.command("run")(command(Required, seen.append, "Run it.", name="run"))
    app.command("noop")(lambda: None)
    return app


def test_options_without_a_default_are_required_and_round_trip():
    seen: list = []
    config = Required(folders=[Path("a"), Path("b")], repo="me/x", layers=True)
    argv = to_argv(config)
    assert argv == ["a", "b", "--repo", "me/x", "--layers"]
    assert CliRunner().invoke(_required_app(seen), ["run", *argv]).exit_code == 0
    assert seen == [config]
    missing = CliRunner().invoke(_required_app(seen), ["run", "a"])
    assert missing.exit_code == 2 and "--repo" in missing.output


def test_a_named_negative_flag_replaces_the_no_form():
    seen: list = []
    result = CliRunner().invoke(_required_app(seen), ["run", "a", "--repo", "r", "--by-type"])
    assert result.exit_code == 0 and seen[0].layers is False
    assert to_argv(Required([Path("a")], "r", layers=False)) == ["a", "--repo", "r"]
    help_text = CliRunner().invoke(_required_app([]), ["run", "--help"], terminal_width=200).output
    assert "--by-type" in help_text and "--no-layers" not in help_text


def test_an_option_declared_twice_is_refused():
    @dataclass
    class Twice:
        seed: int = option(0, help="One.")
        inner: Inner = field(default_factory=Inner)
        again: int = option(1, flags="--recon-epochs", help="Two.")

    with pytest.raises(TypeError, match="recon_epochs"):
        command(Twice, print, "Twice.", name="twice")


@dataclass
class Placeholders:
    folder: str = option(argument=True, metavar="FOLDER_IN", help="In.")
    steps: int = option(3, metavar="STEPS_N", help="Steps.")


def test_help_shows_the_declared_metavars():
    app = typer.Typer()
    app.command("run")(command(Placeholders, lambda config: None, "Run it.", name="run"))
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "FOLDER_IN" in result.output and "STEPS_N" in result.output


@dataclass
class Paneled:
    PANEL = "Inner"  # a plain class attribute: no field

    steps: int = option(3, help="Steps.")
    seed: int = option(0, help="Seed.", panel="Own")


@dataclass
class PanelRoot:
    PANELS = ("Own", "Inner")

    first: int = option(1, help="First.")
    inner: Paneled = field(default_factory=Paneled)


def test_an_option_lists_in_its_own_panel_else_its_config_s_in_declared_order():
    assert {opt.name: opt.panel for opt in options_of(PanelRoot)} == {
        "first": None,
        "steps": "Inner",
        "seed": "Own",
    }
    app = typer.Typer()
    app.command("run")(command(PanelRoot, lambda config: None, "Run it.", name="run"))
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["run", "--help"], terminal_width=100)
    titles = [
        line.split("─ ")[1].split(" ─")[0] for line in result.output.splitlines() if "╭─" in line
    ]
    assert titles == ["Options", "Own", "Inner"]
