"""``compress bench-sparse``: a 2:4-pruned model on torch's sparse kernels vs dense, on a GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def bench_sparse(
    folder: Annotated[Path, typer.Argument(help="Folder written by compress prune --pattern 2:4.")],
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for the timings.")] = 512,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens per decode timing.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (median).")] = 5,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Time prefill and per-token decoding, dense vs 2:4 semi-structured sparse (needs a GPU)."""
    from exporters.sparse24 import benchmark, require_gpu

    require_gpu()  # before loading anything
    result = benchmark(folder, prompt_tokens, new_tokens, repeats)
    if output:
        from compress.core.io import write_json_atomic

        write_json_atomic(output, result)
    typer.echo(json.dumps(result, indent=2))
