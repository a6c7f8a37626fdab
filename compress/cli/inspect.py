"""``compress eval ppl`` and ``compress info``: read-only views of models and outputs."""

from __future__ import annotations

import json

import typer

from compress.app import evaluate
from compress.app.inspect import InfoConfig, inspect_folder
from compress.cli.render import table
from compress.core.options import command

ERROR_HEADERS = [
    "block",
    "calib before",
    "calib after",
    "held-out before",
    "held-out after",
    "seconds",
]


def _ppl(config: evaluate.PplConfig) -> None:
    done = evaluate.perplexity(config)
    result = done.record
    typer.echo(
        table(
            ["dataset", "split", "windows x seqlen", "perplexity"],
            [
                [
                    config.dataset,
                    done.split,
                    f"{result['windows']}x{config.seqlen}",
                    f"{result['perplexity']:.2f}",
                ]
            ],
        )
    )


def _info(config: InfoConfig) -> None:
    found = inspect_folder(config)
    if config.errors or config.plot:
        if config.errors:
            typer.echo(table(ERROR_HEADERS, found.error_rows))
        if config.plot:
            typer.echo(f"wrote {config.plot}")
        return
    typer.echo(json.dumps(found.recipe, indent=2))
    header = ["layer" if config.layers else "layer type", "count", "target", "measured"]
    typer.echo(table(header, found.layer_rows))


ppl = command(
    evaluate.PplConfig,
    _ppl,
    "Perplexity over non-overlapping windows (wikitext2/c4: the SparseGPT/Wanda protocol).",
    name="ppl",
)
info = command(
    InfoConfig,
    _info,
    "Print the recipe and measured sparsity of a pruned model folder (or its per-block errors).",
    name="info",
)
