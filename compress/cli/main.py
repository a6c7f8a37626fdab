"""``compress``: the entry point joining every command group."""

from __future__ import annotations

import typer

from compress import __version__
from compress.cli.base import new_app

app = new_app("Prune, reconstruct, fine-tune, evaluate and ship causal language models.")
eval_app = new_app("Evaluate a model: perplexity, zero-shot tasks, sharpness.")
app.add_typer(eval_app, name="eval")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Prune, reconstruct, fine-tune, evaluate and ship causal language models."""
