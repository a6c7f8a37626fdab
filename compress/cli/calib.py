"""``compress calib``: write self-generated calibration text, and look at a calibration file."""

from __future__ import annotations

import typer

from compress.app import calib as workflow
from compress.cli.base import new_app
from compress.cli.render import table
from compress.core.options import command

app = new_app("Self-generated calibration text: generate it with the model, inspect a file.")


def _generate(config: workflow.GenerateConfig) -> None:
    stats = workflow.generate(config)
    typer.echo(
        f"{config.output}: {stats.texts} texts ({stats.added} new; {stats.draws} drawn, "
        f"{stats.rejected} rejected = {stats.rejection_rate:.1%}) in {stats.seconds:.1f} s: "
        f"{stats.texts_per_second:.2f} accepted texts/s, {stats.tokens_per_second:.1f} tokens/s "
        "generated"
    )


def _inspect(config: workflow.InspectConfig) -> None:
    info = workflow.inspect(config)
    tokens = info["tokens"]
    typer.echo(
        f"{info['file']}: {info['texts']} texts, {tokens['total']} tokens "
        f"(mean {tokens['mean']:.1f}, min {tokens['min']}, max {tokens['max']}); "
        f"code-like {info['code_share']:.1%}; base seeds {info['seeds']}"
    )
    typer.echo("\n" + table(["tokens", "texts"], info["length_histogram"]))
    typer.echo("\n" + table(["language", "share"], list(info["languages"].items())))
    typer.echo("\n" + table(["opening word", "texts"], info["opening_tokens"]))


app.command("generate")(
    command(
        workflow.GenerateConfig,
        _generate,
        "Write texts the model generates itself: a random first token, 4 greedy tokens, then "
        "sampling (temperature 1, top-k 50, top-p 1) to EOS or --max-len; texts in another "
        "language are drawn again.",
        name="generate",
    )
)
app.command("inspect")(
    command(
        workflow.InspectConfig,
        _inspect,
        "Counts, length histogram, language share, frequent opening words and code-like share.",
        name="inspect",
    )
)
