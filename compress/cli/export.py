"""``compress export NAME`` (one command per registered exporter: onnx, bnb, compressed),
``compress run-onnx``, ``compress card`` and ``compress push``.

Thin commands: ``export NAME`` is built from its exporter's config (:mod:`exporters.registry`),
runs it and prints its summary; the others from their config in :mod:`compress.app.export`.
Heavy imports happen inside the exporters and workflows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from compress.app import export as workflows
from compress.cli.base import new_app
from compress.core.options import command
from exporters.registry import EXPORTERS, Exporter, run_export

export_app = new_app("Export a compressed model for other runtimes.")


@export_app.callback()
def export() -> None:
    """Export a compressed model for other runtimes."""


def _exporter_command(exporter: type[Exporter]) -> Callable[..., None]:
    """``compress export NAME``: the exporter's config as options; prints its summary."""

    def run(config: Any) -> None:
        instance = exporter()
        record = run_export(instance, config)
        for line in instance.summary(record, config):
            typer.echo(line)

    return command(exporter.config, run, exporter.doc, name=f"export_{exporter.name}")


for _name, _exporter in EXPORTERS.items():
    export_app.command(_name)(_exporter_command(_exporter))


def _run_onnx(config: workflows.RunOnnxConfig) -> None:
    for piece in workflows.run_onnx(config):
        typer.echo(piece, nl=False)
    typer.echo()


def _card(config: workflows.CardConfig) -> None:
    path = workflows.card(config)
    if config.check:
        typer.echo(f"{path}: reads as the records render it; metadata valid")
    else:
        typer.echo(f"wrote {path}; review it before pushing")


def _push(config: workflows.PushConfig) -> None:
    url = workflows.push(config)
    typer.echo(f"pushed {config.folder} to {config.repo_id}: {url}")


run_onnx = command(
    workflows.RunOnnxConfig,
    _run_onnx,
    "Generate greedily with an exported model in ONNX Runtime.",
    name="run_onnx",
)
card = command(
    workflows.CardConfig,
    _card,
    "Write DIR/README.md, the model card, from report.json and the evaluation/export records.",
    name="card",
)
push = command(
    workflows.PushConfig,
    _push,
    """Upload DIR (model, tokenizer, card, report, ONNX export) to the Hub in one commit.

    The token comes from HF_TOKEN or the login cache (huggingface-cli login); HF_ENDPOINT
    selects another Hub endpoint.
    """,
    name="push",
)
