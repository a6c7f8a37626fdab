"""``compress calib``: write self-generated calibration text, and look at a calibration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress.cli.base import new_app
from compress.cli.render import table

app = new_app("Self-generated calibration text: generate it with the model, inspect a file.")


@app.command()
def generate(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Hub id, local folder or .gguf file; omitted: the embedded SmolLM2-135M-Instruct."
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Texts the file should hold.")] = 256,
    max_len: Annotated[
        int, typer.Option(help="Longest text in tokens (the paper: 2048); EOS ends one sooner.")
    ] = 1024,
    batch_size: Annotated[int, typer.Option(help="Texts generated together.")] = 16,
    seed: Annotated[
        int, typer.Option(help="Base seed; text k gets seed (SEED << 32) | k, recorded per line.")
    ] = 0,
    lang: Annotated[
        str,
        typer.Option(help="Keep texts py3langid assigns this ISO 639-1 code; 'any' keeps all."),
    ] = "en",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
    ] = "auto",
    output: Annotated[
        Path, typer.Option(help="JSONL file; appended to, so a rerun continues it to --n.")
    ] = Path("calib.jsonl"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Write texts the model generates itself: a random first token, 4 greedy tokens, then sampling (temperature 1, top-k 50, top-p 1) to EOS or --max-len; texts in another language are drawn again."""
    from compress.models import load_model
    from compress.selfgen import Recipe, check_request, generate_file

    recipe = Recipe(max_len=max_len)
    language = None if lang == "any" else lang
    check_request(n, batch_size, seed, language)
    loaded = load_model(model, device, dtype)
    stats = generate_file(
        loaded.model,
        loaded.tokenizer,
        output,
        n,
        recipe,
        seed=seed,
        batch_size=batch_size,
        language=language,
        progress=progress,
    )
    typer.echo(
        f"{output}: {stats.texts} texts ({stats.added} new; {stats.draws} drawn, "
        f"{stats.rejected} rejected) in {stats.seconds:.1f} s: "
        f"{stats.texts_per_second:.2f} texts/s, {stats.tokens_per_second:.1f} tokens/s generated"
    )


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A JSONL file written by calib generate.")],
    top: Annotated[int, typer.Option(help="How many opening words to list.")] = 10,
) -> None:
    """Counts, length histogram, language share, frequent opening words and code-like share."""
    from compress.selfgen import inspect as inspect_file

    info = inspect_file(file, top)
    tokens = info["tokens"]
    typer.echo(
        f"{info['file']}: {info['texts']} texts, {tokens['total']} tokens "
        f"(mean {tokens['mean']:.1f}, min {tokens['min']}, max {tokens['max']}); "
        f"code-like {info['code_share']:.1%}; base seeds {info['seeds']}"
    )
    typer.echo("\n" + table(["tokens", "texts"], info["length_histogram"]))
    typer.echo("\n" + table(["language", "share"], list(info["languages"].items())))
    typer.echo("\n" + table(["opening word", "texts"], info["opening_tokens"]))
