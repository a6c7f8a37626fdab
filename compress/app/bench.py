"""``compress bench-sparse``: a 2:4-pruned folder on torch's semi-structured kernels vs dense."""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.options import option


@dataclass(kw_only=True)
class BenchSparseConfig:
    folder: str = option(argument=True, help="Folder written by compress prune --pattern 2:4.")
    prompt_tokens: int = option(512, help="Prompt length for the timings.")
    new_tokens: int = option(32, help="Greedy tokens per decode timing.")
    repeats: int = option(5, help="Timed runs per figure (median).")
    output: str | None = option(
        None, flags=("--output", "-o"), help="Also write the results as JSON here.", writes=True
    )


def bench_sparse(config: BenchSparseConfig) -> dict:
    """Prefill and per-token timings, dense vs 2:4 sparse; refuses without a GPU, before
    loading anything."""
    from pathlib import Path

    from compress.core.io import write_json_atomic
    from exporters.sparse24 import benchmark, require_gpu

    require_gpu()
    result = benchmark(Path(config.folder), config.prompt_tokens, config.new_tokens, config.repeats)
    if config.output:
        write_json_atomic(Path(config.output), result)
    return result
