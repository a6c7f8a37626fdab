"""How fast and how good is one-shot pruning of the embedded SmolLM2-135M on this CPU?

For magnitude / Wanda / SparseGPT at 50% unstructured and 2:4 (LR, no reconstruction), with
64 x 512 calibration tokens from the Wikipedia snippet: pruning seconds, the seconds of one
plain forward pass over the same calibration set (the floor no one-shot method can beat), the
ratio, peak RSS (each configuration in a fresh process), and held-out Wikipedia perplexity before
and after. Targets (issue 2): Wanda <= 1.5x and SparseGPT <= 2.5x the floor; peak RSS < 2 GB.

    python benchmarks/prune_embedded.py [--nsamples 64 --seqlen 512 --ppl-windows 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_rss_bytes, run_isolated, save  # noqa: E402

METHODS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")


def load(nsamples: int, seqlen: int):
    from compress.calibration import load_texts, load_windows
    from compress.models import load_model

    loaded = load_model(None, "cpu", "float32")
    windows = load_windows(loaded.tokenizer, "wikipedia", nsamples, seqlen, seed=0)
    return loaded, windows, load_texts("wikipedia", "test")


def one(method: str, pattern: str, args) -> dict:
    """Prune once (in this fresh process) and measure."""
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.engine import prune_model
    from evaluators.perplexity import perplexity

    loaded, windows, test = load(args.nsamples, args.seqlen)
    config = PruneConfig(
        method=method,
        pattern=pattern,
        calibration=CalibrationConfig(
            source="wikipedia", nsamples=args.nsamples, seqlen=args.seqlen, seed=0, batch_size=8
        ),
        reconstruct=ReconstructConfig(technique="lr"),  # one-shot pruning speed
    )
    start = time.perf_counter()
    outcome = prune_model(loaded.model, windows.ids, config)
    seconds = time.perf_counter() - start
    ppl = perplexity(loaded.model, loaded.tokenizer, test, args.seqlen, args.ppl_windows)[
        "perplexity"
    ]
    return {
        "method": method,
        "pattern": pattern,
        "prune_seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "ppl_after": ppl,
        "sparsity": sum(v["zeros"] for v in outcome.layers.values())
        / sum(v["numel"] for v in outcome.layers.values()),
    }


@torch.no_grad()
def baseline(args) -> dict:
    """Dense perplexity and the forward-pass floor over the calibration set."""
    from evaluators.perplexity import perplexity

    loaded, windows, test = load(args.nsamples, args.seqlen)
    loaded.model(input_ids=windows.ids[:8], use_cache=False)  # warm-up
    start = time.perf_counter()
    for batch in windows.ids.split(8):
        loaded.model(input_ids=batch, use_cache=False)
    floor = time.perf_counter() - start
    ppl = perplexity(loaded.model, loaded.tokenizer, test, args.seqlen, args.ppl_windows)[
        "perplexity"
    ]
    return {"forward_floor_seconds": floor, "ppl_dense": ppl, "peak_rss_bytes": peak_rss_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "PATTERN"))
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("out/bench/prune_embedded.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args)))
        return
    if args.baseline:
        print(json.dumps(baseline(args)))
        return
    common = [
        "--nsamples",
        str(args.nsamples),
        "--seqlen",
        str(args.seqlen),
        "--ppl-windows",
        str(args.ppl_windows),
    ]
    base = run_isolated(__file__, ["--baseline", *common])
    rows = []
    for pattern in PATTERNS:
        for method in METHODS:
            row = run_isolated(__file__, ["--one", method, pattern, *common])
            row["x_floor"] = row["prune_seconds"] / base["forward_floor_seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\nembedded SmolLM2-135M, fp32, CPU, calibration {args.nsamples} x {args.seqlen}, batch 8; ppl: Wikipedia test split, {args.ppl_windows} x {args.seqlen}"
    )
    print(
        f"forward floor {base['forward_floor_seconds']:.1f} s, dense ppl {base['ppl_dense']:.2f}, dense peak RSS {base['peak_rss_bytes'] / 2**30:.2f} GiB"
    )
    print(
        f"{'pattern':13s} {'method':10s} {'prune s':>8s} {'x floor':>8s} {'peak RSS':>9s} {'ppl':>8s}"
    )
    for r in rows:
        print(
            f"{r['pattern']:13s} {r['method']:10s} {r['prune_seconds']:8.1f} {r['x_floor']:8.2f} {r['peak_rss_bytes'] / 2**30:8.2f}G {r['ppl_after']:8.2f}"
        )
    save(
        args.output,
        {
            "machine": machine(),
            "settings": vars(args) | {"output": str(args.output)},
            "baseline": base,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
