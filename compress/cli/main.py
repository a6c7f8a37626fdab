"""``compress``: the entry point joining every command group."""

from __future__ import annotations

import typer

from compress import __version__
from compress.cli import bench, eval_tasks, export, finetune, inspect, prune, quantize, sharpness
from compress.cli.base import StackedHelpCommand, new_app
from compress.cli.calib import app as calib_app
from compress.cli.cbm import app as cbm_app

app = new_app("Prune, reconstruct, fine-tune, evaluate and ship causal language models.")
eval_app = new_app("Evaluate a model: perplexity, zero-shot tasks, sharpness.")
app.add_typer(eval_app, name="eval")
app.command("prune", cls=StackedHelpCommand)(prune.prune)
app.command("quantize", cls=StackedHelpCommand)(quantize.quantize)
app.command("info")(inspect.info)
eval_app.command("ppl")(inspect.ppl)
eval_app.command("tasks")(eval_tasks.tasks)
eval_app.command("all")(eval_tasks.run_all)
eval_app.command("compare")(eval_tasks.compare)
eval_app.command("sharpness")(sharpness.sharpness)
app.add_typer(export.export_app, name="export")
app.command("run-onnx")(export.run_onnx)
app.command("card")(export.card)
app.command("push")(export.push)
app.command("bench-sparse")(bench.bench_sparse)
app.command("finetune")(finetune.finetune)
app.add_typer(cbm_app, name="cbm")
app.add_typer(calib_app, name="calib")


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
