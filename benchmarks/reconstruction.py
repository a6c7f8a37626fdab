"""Does reconstruction pay off on the embedded SmolLM2-135M, and does it overfit?

For each pruner x technique at 50% unstructured: normalized error vs the dense model at the last
block (calibration and held-out Wikipedia), perplexity on held-out Wikipedia and LAMBADA,
seconds and peak RSS (each run in a fresh process). The paper's pattern to compare with: final
block calibration error BR < LR by >= 50%, BR+GP below BR by >= 50%, CR lower still on
calibration; perplexity of BR+GP below LR for every pruner (magnitude by far).

    python benchmarks/reconstruction.py [--nsamples 64 --seqlen 512 --epochs 10]

Budget sweep: ``--steps-sweep 4,16,64`` runs each technique once per ``--recon-steps`` budget
(instead of ``--epochs``) and records the steps taken and the mean share of each block's error
closed (calibration and held-out), the question being at what budget reconstruction pays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_rss_bytes, run_isolated, save  # noqa: E402

METHODS = ("wanda", "sparsegpt", "magnitude")
TECHNIQUES = ("lr", "br", "br+gp", "br+gp+cr")


def one(method: str, technique: str, args) -> dict:
    from compress.calibration import load_texts, load_windows
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.engine import prune_model
    from compress.models import load_model
    from evaluators.perplexity import perplexity

    loaded = load_model(None, "cpu", "float32")
    tok = loaded.tokenizer
    calib = load_windows(tok, "wikipedia", args.nsamples, args.seqlen, seed=0)
    holdout = load_windows(tok, "wikipedia", args.holdout, args.seqlen, seed=0, split="test")
    config = PruneConfig(
        method=method,
        calibration=CalibrationConfig(
            source="wikipedia",
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            seed=0,
            batch_size=args.batch,
        ),
        reconstruct=ReconstructConfig(
            technique=technique,
            epochs=args.epochs,
            steps=args.steps,
            lr=args.lr,
            measure_errors=True,
        ),
    )
    start = time.perf_counter()
    outcome = prune_model(loaded.model, calib.ids, config, holdout_ids=holdout.ids)
    seconds = time.perf_counter() - start
    blocks = outcome.blocks
    last = blocks[-1]["errors"]["after_reconstruction"]
    ppl = {
        name: perplexity(
            loaded.model, tok, load_texts(name, "test"), args.seqlen, args.ppl_windows
        )["perplexity"]
        for name in ("wikipedia", "lambada")
    }
    return {
        "method": method,
        "technique": technique,
        "calib_error": last["calibration"],
        "holdout_error": last["holdout"],
        "ppl_wikipedia": ppl["wikipedia"],
        "ppl_lambada": ppl["lambada"],
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "steps": args.steps,
        "steps_run": [sum(w["steps_run"] for w in b.get("reconstruction", [])) for b in blocks],
        "closed_mean": {
            stream: sum(b["errors"]["closed"].get(stream, 0.0) for b in blocks) / len(blocks)
            for stream in ("calibration", "holdout")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, help="--recon-steps per block instead of --epochs")
    parser.add_argument("--steps-sweep", help="comma-separated --recon-steps budgets to sweep")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "TECHNIQUE"))
    parser.add_argument("--output", type=Path, default=Path("out/bench/reconstruction.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args)))
        return
    common = [
        f"--{k}={v}"
        for k, v in (
            ("nsamples", args.nsamples),
            ("seqlen", args.seqlen),
            ("holdout", args.holdout),
            ("epochs", args.epochs),
            ("batch", args.batch),
            ("ppl-windows", args.ppl_windows),
            ("lr", args.lr),
        )
    ]
    sweep = args.steps_sweep.split(",") if args.steps_sweep else [args.steps]
    budgets = [[f"--steps={n}"] if n else [] for n in sweep]
    rows = []
    for method in args.methods.split(","):
        for technique in args.techniques.split(","):
            for budget in budgets:
                row = run_isolated(__file__, ["--one", method, technique, *common, *budget])
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\nembedded SmolLM2-135M, fp32, CPU; Wanda/SparseGPT/magnitude 50% unstructured; calibration {args.nsamples} x {args.seqlen} Wikipedia, held-out {args.holdout} x {args.seqlen}; {args.epochs} epochs, batch {args.batch}; ppl {args.ppl_windows} x {args.seqlen} windows"
    )
    print(
        f"{'method':10s} {'technique':9s} {'calib err':>10s} {'held err':>10s} {'ppl wiki':>9s} {'ppl lamb':>9s} {'sec':>7s} {'RSS':>6s}"
    )
    for r in rows:
        if r["steps"]:
            closed = r["closed_mean"]
            print(
                f"  steps {r['steps']}: closed calib {closed['calibration']:.1%}, held-out {closed['holdout']:.1%}"
            )
        print(
            f"{r['method']:10s} {r['technique']:9s} {r['calib_error']:10.4f} {r['holdout_error']:10.4f} {r['ppl_wikipedia']:9.2f} {r['ppl_lambada']:9.2f} {r['seconds']:7.0f} {r['peak_rss_bytes'] / 2**30:5.2f}G"
        )
    save(
        args.output,
        {"machine": machine(), "settings": vars(args) | {"output": str(args.output)}, "rows": rows},
    )


if __name__ == "__main__":
    main()
