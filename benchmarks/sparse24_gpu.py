"""Does 2:4 sparsity make the embedded model faster on a GPU? One prepared run, under 10 minutes.

Steps: Wanda 2:4 on the embedded SmolLM2-135M-Instruct on the GPU (32 x 256 calibration tokens,
--reconstruct lr: seconds), then :func:`exporters.sparse24.benchmark`: the same model dense and
with its 2:4 Linears on torch's semi-structured sparse kernels, prefill latency and per-token
decode latency, logits compared within bf16 tolerance, for two prompt lengths. Prints a table,
writes ``results.json`` under ``--output``. On a CPU it refuses with one line (exit 2).

    python benchmarks/sparse24_gpu.py [--pruned DIR] [--output out/bench/sparse24]
        [--prompt-tokens 128 --prompt-tokens 2048] [--new-tokens 32] [--repeats 5]

Expect little or no gain at batch 1 decoding (the sparse GEMM's fixed cost on 576-wide layers);
prefill on long prompts is where 2:4 kernels can show up to ~1.3-1.7x on Ampere/Hopper.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from compress.cli.render import table
from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from exporters.sparse24 import benchmark, require_gpu

sys.path.insert(0, str(Path(__file__).parent))
from common import prune_lr  # noqa: E402

PROMPTS = (128, 2048)  # a chat-sized prompt (decode-bound) and a long one (prefill-bound)


def main(
    output: Annotated[Path, typer.Option(help="Work folder and results.json.")] = Path(
        "out/bench/sparse24"
    ),
    pruned: Annotated[
        Path | None, typer.Option(help="Reuse this 2:4-pruned folder instead of pruning.")
    ] = None,
    prompt_tokens: Annotated[
        list[int] | None, typer.Option(help="Prompt lengths timed (repeat the flag).")
    ] = None,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens per decode timing.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (median).")] = 5,
) -> None:
    """Prune 2:4 on the GPU, then time dense vs semi-structured sparse."""
    try:
        require_gpu()
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    start, load = time.perf_counter(), os.getloadavg()
    folder = pruned or prune_lr(output / "pruned-2-4", "wanda", "2:4", 32, 256, "cuda")
    runs = [benchmark(folder, tokens, new_tokens, repeats) for tokens in prompt_tokens or PROMPTS]
    header = [
        "prompt",
        "dense prefill ms",
        "2:4 prefill ms",
        "x",
        "dense ms/token",
        "2:4 ms/token",
        "x",
        "max |dlogit|",
        "ok",
    ]
    rows = [
        [r["prompt_tokens"], r["dense"]["prefill_ms"], r["sparse_2_4"]["prefill_ms"],
         r["speedup"]["prefill"], r["dense"]["per_token_ms"], r["sparse_2_4"]["per_token_ms"],
         r["speedup"]["per_token"], r["logits"]["max_abs_diff"], r["logits"]["within_tolerance"]]
        for r in runs
    ]  # fmt: skip
    print(table(header, rows))
    print(f"{runs[0]['gpu']}, torch {runs[0]['torch']}, bf16, {runs[0]['linears_swapped']} Linears")
    print(f"load average before {load}, after {os.getloadavg()}")
    seconds = time.perf_counter() - start
    results = {"runs": runs, "seconds": seconds}
    write_json_atomic(output / "results.json", results)
    print(json.dumps(results))
    print(f"wrote {output / 'results.json'} ({seconds:.0f}s)")


if __name__ == "__main__":
    typer.run(main)
