"""Does self-generated calibration text reduce reconstruction overfitting on the embedded model?

The paper's claim (arXiv 2406.15524, "Self-generated calibration data"): adding text the model
writes itself to the real calibration set lowers held-out reconstruction error and perplexity
after reconstruction. Here: the embedded SmolLM2-135M, Wanda 50% unstructured + BR+GP, REAL
Wikipedia windows plus 0, K1, K2, ... self-generated windows (one random window of --seqlen
tokens from each of K texts long enough, :func:`compress.selfgen.selfgen_windows`), concatenated
along the batch dimension. Reported per K: normalized error after the last block on the
calibration set (real + self-generated, so not comparable across K) and on held-out Wikipedia,
perplexity on held-out Wikipedia and LAMBADA, seconds; plus generation throughput.

Wanda's statistics come from the real windows only, as in the paper (``--stats-from all``: from
every window); reconstruction trains on real + self-generated.

    python benchmarks/selfgen.py [--real 64 --selfgen 0,64,256 --seqlen 512 --epochs 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402


def generate(args, model, tokenizer) -> dict:
    """Grow ``args.selfgen_file`` until it holds ``max(K)`` texts of at least --seqlen tokens."""
    from compress.selfgen import Recipe, generate_long_texts

    want = max(int(k) for k in args.selfgen.split(","))
    stats = generate_long_texts(
        model, tokenizer, args.selfgen_file, want, args.seqlen, Recipe(max_len=args.max_len),
        batch_size=args.gen_batch,
    )  # fmt: skip
    return {
        **{k: getattr(stats, k) for k in ("texts", "added", "draws", "rejected", "tokens")},
        "seconds": stats.seconds,
        "tokens_per_second": stats.tokens_per_second or None,
        "texts_per_second": stats.texts_per_second or None,
        "reused_file": stats.draws == 0,
    }


def ppl(model, tokenizer, args) -> dict:
    from compress.calibration import load_texts
    from evaluators.perplexity import perplexity

    return {
        name: perplexity(model, tokenizer, load_texts(name, "test"), args.seqlen, args.ppl_windows)[
            "perplexity"
        ]
        for name in ("wikipedia", "lambada")
    }


def one(k: int, args, real, holdout) -> dict:
    import torch

    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.engine import Engine
    from compress.models import load_model
    from compress.selfgen import selfgen_windows

    loaded = load_model(None, "cpu", "float32")
    parts = [real.ids]
    if k:
        parts.append(selfgen_windows(loaded.tokenizer, args.selfgen_file, k, args.seqlen, 0).ids)
    ids = torch.cat(parts)  # (real + k, T)
    config = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(
            source="wikipedia", nsamples=len(ids), seqlen=args.seqlen, seed=0, batch_size=args.batch
        ),
        reconstruct=ReconstructConfig(technique="br+gp", epochs=args.epochs, measure_errors=True),
    )
    start = time.perf_counter()
    stats = len(real.ids) if args.stats_from == "real" else None  # real windows come first
    outcome = Engine(loaded.model, config, stats_samples=stats).run(ids, holdout.ids)
    seconds = time.perf_counter() - start
    last = outcome.blocks[-1]["errors"]["after_reconstruction"]
    return {
        "selfgen": k,
        "real": len(real.ids),
        "calib_error": last["calibration"],
        "holdout_error": last["holdout"],
        **{
            f"ppl_{name}": value
            for name, value in ppl(loaded.model, loaded.tokenizer, args).items()
        },
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=64, help="real Wikipedia windows")
    parser.add_argument("--selfgen", default="0,64,256", help="self-generated windows per run")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--max-len", type=int, default=None, help="default: 2 x --seqlen")
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument(
        "--stats-from", choices=("real", "all"), default="real", help="windows for Wanda norms"
    )
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--selfgen-file", type=Path, default=Path("out/bench/selfgen.jsonl"))
    parser.add_argument("--output", type=Path, default=Path("out/bench/selfgen.json"))
    args = parser.parse_args()
    args.max_len = args.max_len or 2 * args.seqlen

    from compress.calibration import load_windows
    from compress.models import load_model

    loaded = load_model(None, "cpu", "float32")
    tok = loaded.tokenizer
    generation = generate(args, loaded.model, tok)
    print(f"generation: {generation}", flush=True)
    dense = ppl(loaded.model, tok, args)
    real = load_windows(tok, "wikipedia", args.real, args.seqlen, seed=0)
    holdout = load_windows(tok, "wikipedia", args.holdout, args.seqlen, seed=0, split="test")
    rows = []
    for k in (int(k) for k in args.selfgen.split(",")):
        rows.append(one(k, args, real, holdout))
        print(rows[-1], flush=True)

    print(
        f"\nembedded SmolLM2-135M, fp32, CPU ({machine()['cores']} cores); Wanda 50% unstructured "
        f"(statistics from {args.stats_from} windows) + BR+GP, {args.epochs} epochs, batch {args.batch}; {args.real} x {args.seqlen} real "
        f"Wikipedia windows + K self-generated; held-out {args.holdout} x {args.seqlen} Wikipedia; "
        f"ppl on {args.ppl_windows} x {args.seqlen} windows; dense ppl wiki "
        f"{dense['wikipedia']:.2f}, lambada {dense['lambada']:.2f}"
    )
    print(
        f"{'K':>5s} {'calib err':>10s} {'held err':>10s} {'ppl wiki':>9s} {'ppl lamb':>9s} {'sec':>7s}"
    )
    for r in rows:
        print(
            f"{r['selfgen']:5d} {r['calib_error']:10.4f} {r['holdout_error']:10.4f} "
            f"{r['ppl_wikipedia']:9.2f} {r['ppl_lambada']:9.2f} {r['seconds']:7.0f}"
        )
    if generation["tokens_per_second"]:
        print(
            f"generation (batch {args.gen_batch}, max-len {args.max_len}): "
            f"{generation['tokens_per_second']:.1f} tokens/s, "
            f"{generation['texts_per_second']:.3f} texts/s, {generation['rejected']} of "
            f"{generation['draws']} draws rejected as non-English"
        )
    save(
        args.output,
        {
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "generation": generation,
            "dense": dense,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
