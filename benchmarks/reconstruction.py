"""Does reconstruction pay off on the embedded SmolLM2-135M, at what budget, and does it overfit?

Each configuration (pruner x technique x budget, 50% unstructured) runs in a fresh process:
perplexity on held-out Wikipedia (its test split), the normalized error vs the dense model per
block before and after reconstruction (calibration and held-out Wikipedia) and the share of it
closed, the steps each block took, seconds of the pruning run, peak RSS and the load average
around it. LR (the pruner's own update, no training) is the baseline of every pruner and the
dense model the floor: the budget sweep asks at what steps per block BR+GP closes at least half
of the LR-to-dense perplexity gap (``gap_closed`` in the table).

Budget sweep (the default: Wanda and SparseGPT, LR and BR+GP, 32 x 512 calibration):

    python benchmarks/reconstruction.py --budgets 4,16,64,320

The learning rate is ``--recon-lr``'s default unless ``--lr`` is given: 2e-4 x 320 / steps per
block within [2e-4, 3e-3] (``ReconstructConfig.learning_rate``), so each budget runs at its own
default, as a user's run would; the rate used is in each row (``lr_used``).

Each result is written to ``--output`` as soon as it finishes; running the same command again
skips the configurations already there (same settings), so a long sweep resumes where it
stopped, and ``--budgets 320`` alone adds one budget to an earlier sweep. ``--redo`` reruns.
The paper's mitigation of reconstruction's overfitting, self-generated calibration text
(``--self-gen K``: K windows of texts the model writes itself join the real ones for
reconstruction, the pruners' statistics staying on the real ones; the texts are written to
``--selfgen-file`` first when it holds too few):

    python benchmarks/reconstruction.py --methods sparsegpt --budgets 64 --self-gen 32 \\
        --output out/bench/reconstruction_selfgen.json

The technique comparison of the paper (its settings: epochs instead of a step budget):

    python benchmarks/reconstruction.py --methods wanda,sparsegpt,magnitude \\
        --techniques lr,br,br+gp,br+gp+cr --budgets epochs --nsamples 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    load_average,
    peak_rss_bytes,
    run_isolated,
    sweep,
)

METHODS = ("wanda", "sparsegpt")
TECHNIQUES = ("lr", "br+gp")
EPOCHS = "epochs"  # the budget that means --epochs instead of a step count
# the settings that identify a finished result in --output (besides method, technique, budget)
KEYED = ("nsamples", "seqlen", "holdout", "epochs", "batch", "lr", "schedule", "ppl_windows")


def one(method: str, technique: str, budget: str, args) -> dict:
    """One configuration in this process; ``method`` "dense" measures the unpruned model."""
    import torch

    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.data.calibration import load_texts, load_windows
    from compress.data.selfgen import selfgen_windows
    from compress.engine import Engine
    from compress.model.loading import load_model
    from evaluators.perplexity import perplexity

    load_before = load_average()
    loaded = load_model(None, "cpu", args.dtype)
    tok = loaded.tokenizer
    row: dict = {"method": method, "technique": technique, "budget": budget}
    if method != "dense":
        calib = load_windows(tok, "wikipedia", args.nsamples, args.seqlen, seed=0)
        holdout = load_windows(tok, "wikipedia", args.holdout, args.seqlen, seed=0, split="test")
        recon = ReconstructConfig(
            technique=technique,
            epochs=args.epochs,
            steps=int(budget) if budget.isdigit() else None,  # "-" (LR) or "epochs"
            lr=args.lr,
            schedule=args.schedule,
            optimizer=args.optimizer,
            rho=args.rho,
            measure_errors=True,
        )
        config = PruneConfig(
            method=method,
            sparsity=args.sparsity,
            calibration=CalibrationConfig(
                source="wikipedia",
                nsamples=args.nsamples,
                seqlen=args.seqlen,
                seed=0,
                batch_size=args.batch,
            ),
            reconstruct=recon,
        )
        ids, stats = calib.ids, None
        if args.self_gen:  # the paper's mitigation: reconstruct on real + self-generated windows
            made = selfgen_windows(tok, args.selfgen_file, args.self_gen, args.seqlen, 0)
            ids, stats = torch.cat([calib.ids, made.ids]), len(calib.ids)  # real ones first
            config = replace(config, calibration=replace(config.calibration, nsamples=len(ids)))
        start = time.perf_counter()
        outcome = Engine(loaded.model, config, stats_samples=stats).run(ids, holdout.ids)
        row["seconds"] = round(time.perf_counter() - start, 1)
        row.update(block_rows(outcome.blocks))
    row["ppl_wikipedia"] = perplexity(  # in float32 whatever the run's dtype: the weights compared
        loaded.model.float(), tok, load_texts("wikipedia", "test"), args.seqlen, args.ppl_windows
    )["perplexity"]
    row["peak_rss_bytes"] = peak_rss_bytes()
    row["load_average"] = {"before": load_before, "after": load_average()}
    return row


def write_selfgen(args) -> None:
    """Grow ``--selfgen-file`` until ``--self-gen`` of its texts are long enough (the paper's
    recipe, up to 2 x --seqlen tokens, generated by the run's model in its dtype)."""
    from compress.data.selfgen import Recipe, generate_long_texts
    from compress.model.loading import load_model

    loaded = load_model(None, "cpu", args.dtype)
    stats = generate_long_texts(
        loaded.model, loaded.tokenizer, args.selfgen_file, args.self_gen, args.seqlen,
        Recipe(max_len=2 * args.seqlen), batch_size=32,
    )  # fmt: skip
    print(f"self-generated calibration: {stats.describe()}", flush=True)


def block_rows(blocks: list[dict]) -> dict:
    """Per block: normalized errors before/after, the share closed, steps taken."""
    errors = [b["errors"] for b in blocks]

    def per_block(stage: str, stream: str) -> list[float | None]:
        return [e[stage][stream] for e in errors]

    closed = {
        stream: [round(e["closed"].get(stream, 0.0), 4) for e in errors]
        for stream in ("calibration", "holdout")
    }
    return {
        "calib_error": per_block("after_reconstruction", "calibration")[-1],
        "holdout_error": per_block("after_reconstruction", "holdout")[-1],
        "errors_before": per_block("before_reconstruction", "calibration"),
        "errors_after": per_block("after_reconstruction", "calibration"),
        "closed": closed,
        "closed_mean": {k: round(sum(v) / len(v), 4) for k, v in closed.items()},
        "steps_run": [sum(w["steps_run"] for w in b.get("reconstruction") or []) for b in blocks],
        "lr_used": next((w["lr"] for b in blocks for w in b.get("reconstruction") or []), None),
    }


def configurations(args) -> list[tuple[str, str, str]]:
    """(method, technique, budget): the dense model, then per pruner LR once and every
    training technique at every budget."""
    budgets = args.budgets.split(",")
    rows = [("dense", "none", "-")]
    for method in args.methods.split(","):
        for technique in args.techniques.split(","):
            trains = technique.startswith("br")
            rows += [(method, technique, b) for b in (budgets if trains else ["-"])]
    return rows


def settings_of(args) -> dict:
    """The settings a saved row must match; a float32 run without --self-gen has those of the
    rows saved before ``--dtype`` and ``--self-gen`` existed, so their sweeps resume."""
    dtype = {} if args.dtype == "float32" else {"dtype": args.dtype}
    selfgen = {"self_gen": args.self_gen} if args.self_gen else {}
    sam = {"optimizer": "sam", "rho": args.rho} if args.optimizer == "sam" else {}
    return (
        {k: getattr(args, k) for k in KEYED} | {"sparsity": args.sparsity} | dtype | selfgen | sam
    )


def gap_closed(row: dict, rows: list[dict]) -> float | None:
    """Share of the LR-to-dense perplexity gap a row closes (None for LR/dense or without them)."""
    lr = [r for r in rows if r["method"] == row["method"] and r["technique"] == "lr"]
    dense = [r for r in rows if r["method"] == "dense"]
    if row["technique"] in ("lr", "none") or not lr or not dense:
        return None
    gap = lr[0]["ppl_wikipedia"] - dense[0]["ppl_wikipedia"]
    return (lr[0]["ppl_wikipedia"] - row["ppl_wikipedia"]) / gap if gap else None


def table(rows: list[dict], args) -> str:
    lines = [
        f"embedded SmolLM2-135M, {args.dtype}, CPU ({os.cpu_count()} cores); {args.sparsity:.0%} "
        f"unstructured; calibration {args.nsamples} x {args.seqlen} Wikipedia"
        f"{f' + {args.self_gen} self-generated (reconstruction only)' if args.self_gen else ''}, "
        f"batch {args.batch}, "
        f"held-out errors {args.holdout} x {args.seqlen}; lr {args.lr or 'auto'} {args.schedule}"
        f"{f', SAM rho {args.rho:g}' if args.optimizer == 'sam' else ''}; "
        f"ppl {args.ppl_windows} x {args.seqlen} held-out Wikipedia windows",
        f"{'method':10s} {'technique':9s} {'steps/blk':>9s} {'lr':>7s} {'ppl':>8s} {'gap closed':>10s} "
        f"{'closed cal':>10s} {'closed held':>11s} {'sec':>7s} {'load before/after':>18s}",
    ]
    for r in rows:
        gap = gap_closed(r, rows)
        closed = r.get("closed_mean", {})
        steps = r.get("steps_run")
        budget = str(max(steps)) if steps and r["technique"].startswith("br") else "-"
        load = r["load_average"]
        lines.append(
            f"{r['method']:10s} {r['technique']:9s} {budget:>9s} {_lr(r.get('lr_used')):>7s} "
            f"{r['ppl_wikipedia']:8.2f} "
            f"{'' if gap is None else f'{gap:.0%}':>10s} "
            f"{_pct(closed.get('calibration')):>10s} {_pct(closed.get('holdout')):>11s} "
            f"{r.get('seconds', 0):7.0f} {load['before'][0]:8.2f} / {load['after'][0]:<7.2f}"
        )
    return "\n".join(lines)


def _lr(x: float | None) -> str:
    return "" if x is None else f"{x:.1e}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--holdout", type=int, default=16)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=10, help="for the budget 'epochs'")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--budgets",
        default="4,16,64,320",
        help="comma-separated --recon-steps per block, or 'epochs' (use --epochs)",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="default: --recon-lr's (scaled to the budget)"
    )
    parser.add_argument("--schedule", default=None, help="default: --recon-schedule's")
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="the model's dtype while it is pruned and reconstructed (bfloat16: the blocks "
        "train in float32 under bfloat16 autocast); perplexity is taken in float32",
    )
    parser.add_argument(
        "--self-gen",
        type=int,
        default=0,
        help="add this many self-generated windows (one per text of --selfgen-file long enough, "
        "written first if it holds too few) to the windows reconstruction trains on; the "
        "pruners' statistics stay on the real ones, as in the paper",
    )
    parser.add_argument("--selfgen-file", type=Path, default=Path("out/bench/selfgen.jsonl"))
    parser.add_argument(
        "--optimizer", choices=("adam", "sam"), default="adam", help="--recon-optimizer"
    )
    parser.add_argument("--rho", type=float, default=None, help="--recon-rho (with sam)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--redo", action="store_true", help="rerun configurations already saved")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "TECHNIQUE", "BUDGET"))
    parser.add_argument("--output", type=Path, default=Path("out/bench/reconstruction.json"))
    args = parser.parse_args()
    from compress.core.config import ReconstructConfig

    args.schedule = args.schedule or ReconstructConfig().schedule.value
    args.rho = args.rho if args.rho is not None else ReconstructConfig().rho
    if args.one:
        print(json.dumps(one(*args.one, args)))
        return
    settings = settings_of(args)
    common = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if v is not None]
    if args.self_gen:
        write_selfgen(args)
        common.append(f"--selfgen-file={args.selfgen_file}")
    rows = sweep(
        args.output,
        settings,
        list(configurations(args)),
        key=lambda r: (r["method"], r["technique"], r["budget"]),
        measure=lambda c: run_isolated(__file__, ["--one", *c, *common]),
        redo=args.redo,
    )
    print(table(rows, args))


if __name__ == "__main__":
    main()
