"""``compress bench-sparse``: the command built from its config; prints the timings."""

from __future__ import annotations

import json

import typer

from compress.app import bench as workflow
from compress.core.options import command


def _bench_sparse(config: workflow.BenchSparseConfig) -> None:
    typer.echo(json.dumps(workflow.bench_sparse(config), indent=2))


bench_sparse = command(
    workflow.BenchSparseConfig,
    _bench_sparse,
    "Time prefill and per-token decoding, dense vs 2:4 semi-structured sparse (needs a GPU).",
    name="bench_sparse",
)
