"""The exporter contract (exporters/base.py): every registered format has a config of the one
convention, a ``compress export NAME`` command built from it, and returns a valid ``artifacts``
record; a stand-in format is one class and one registration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cards.facts import deployment
from compress.cli.export import _exporter_command
from compress.cli.main import app
from compress.core.errors import BadInputError
from compress.core.options import option, options_of
from compress.core.report import ArtifactRecord, artifact_record, check_section
from compress.core.shared_options import output_option, overwrite_option
from exporters.base import EXPORTERS, FOLDER_HELP, Exporter, exporter_of, register, run_export
from exporters.registry import EXPORTERS as REGISTERED
from tests.stacks import needs_sparse_compressors

runner = CliRunner()


def test_the_registry_holds_every_format():
    assert REGISTERED is EXPORTERS
    assert {"onnx", "bnb", "compressed"} <= set(EXPORTERS)


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_every_exporter_has_a_config_of_the_convention_and_a_command(name):
    exporter = EXPORTERS[name]
    assert exporter.name == name and exporter.doc.strip()
    assert dataclasses.is_dataclass(exporter.config)
    opts = {opt.name: opt for opt in options_of(exporter.config)}
    assert opts["folder"].spec.argument
    assert opts["output"].spec.writes and opts["output"].spec.lock
    assert opts["output"].flag == "--output"
    assert opts["overwrite"].flag == "--overwrite"
    command = typer.main.get_command(app).commands["export"].commands[name]
    assert [p.name for p in command.params] == list(opts)
    result = runner.invoke(app, ["export", name, "--help"])
    assert result.exit_code == 0 and "--output" in result.output


@dataclasses.dataclass(frozen=True)
class EchoConfig:
    folder: Path = option(argument=True, help=FOLDER_HELP)
    output: Path = output_option(dataclasses.MISSING, "Folder for the echo", lock=True)
    words: int = option(2, help="Words to write.")
    overwrite: bool = overwrite_option()


class Echo(Exporter):
    """A stand-in format: the folder's config.json copied, plus ``words`` words."""

    name = "echo-test"
    config = EchoConfig
    doc = "Copy config.json (a test format)."
    formats = ("echo",)

    def check(self, source: Path, target: Path, config: EchoConfig) -> None:
        if not (source / "config.json").is_file():
            raise BadInputError(f"{source} has no config.json")

    def export(self, source: Path, staging: Path, config: EchoConfig) -> ArtifactRecord:
        (staging / "config.json").write_bytes((source / "config.json").read_bytes())
        (staging / "words.txt").write_text(" ".join(["word"] * config.words))
        if config.words == 0:
            raise BadInputError("no words")
        files = {p.name: p.stat().st_size for p in sorted(staging.iterdir())}
        load = [{"runtime": "python", "code": 'open("{REPO}/words.txt")'}]
        return artifact_record(format="echo", path=".", files=files, load=load)


@pytest.fixture
def echo():
    register(Echo)
    yield Echo
    del EXPORTERS[Echo.name]


def test_a_new_format_is_one_class_and_one_registration(echo, tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    group = typer.Typer()
    group.command("echo")(_exporter_command(echo))
    group.command("other")(lambda: None)  # two commands: typer then takes the name
    out = tmp_path / "out"
    result = runner.invoke(group, ["echo", str(source), "--output", str(out), "--words", "3"])
    assert result.exit_code == 0, result.output
    assert (out / "words.txt").read_text() == "word word word"
    assert f"wrote {out}" in result.output

    record = run_export(echo(), EchoConfig(folder=source, output=tmp_path / "again"))
    assert check_section("artifacts", {record["format"]: record}) == []
    assert record["bytes"] == sum(record["files"].values())
    assert isinstance(exporter_of("echo"), Echo)
    (row,) = deployment({"artifacts": {"echo": record}}, "me/model")
    assert row["load"][0]["code"] == 'open("me/model/words.txt")'


def test_a_failed_export_publishes_nothing(echo, tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    with pytest.raises(BadInputError, match="no words"):
        run_export(echo(), EchoConfig(folder=source, output=tmp_path / "out", words=0))
    assert list(tmp_path.iterdir()) == [source]
    with pytest.raises(BadInputError, match="no config.json"):
        run_export(echo(), EchoConfig(folder=tmp_path / "none", output=tmp_path / "out"))


def test_onnx_records_are_not_deployment_rows():
    record = artifact_record(format="onnx", path="onnx", files={"model.onnx": 1}, load=[])
    assert deployment({"artifacts": {"onnx": record}}, "me/model") == []


@needs_sparse_compressors
@pytest.mark.slow
def test_compressed_export_returns_a_valid_record(pruned_llama_dir, tmp_path):
    out = tmp_path / "ct"
    result = runner.invoke(app, ["export", "compressed", str(pruned_llama_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "report.json").read_text())["artifacts"][
        "compressed-tensors sparse-bitmask"
    ]
    assert check_section("artifacts", {record["format"]: record}) == []
    assert "bit-identical" in result.output and f"wrote {out}" in result.output
    assert (out / "README.md").is_file()  # the card re-rendered with the record
