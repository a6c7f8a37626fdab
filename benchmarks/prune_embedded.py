"""How fast and how good is one-shot pruning of the embedded SmolLM2-135M on this CPU?

For magnitude / Wanda / SparseGPT at 50% unstructured and 2:4 (LR, no reconstruction), with
64 x 512 calibration tokens from the Wikipedia snippet: pruning seconds, the seconds of one
plain forward pass over the same calibration set (the floor no one-shot method can beat), the
ratio, peak RSS (each configuration in a fresh process), and held-out Wikipedia perplexity before
and after. Targets (issue 2): Wanda <= 1.5x and SparseGPT <= 2.5x the floor; peak RSS < 2 GB.

The peer's columns (issue 17): llm-compressor's Wanda and SparseGPT through
``shared/bench/llmc_cpu_peer.py`` in its own venv (``shared/bench/README.md``), in the same run,
on the very same calibration windows (``--windows``), its pruned folder's perplexity on the same
held-out windows. Goals: ours <= 0.5x the peer's seconds, peak RSS <= the peer's, perplexity
within 2%. ``--skip-peer`` leaves the peer out (needed where its venv is absent).
``--reconstruction`` adds BR+GP (Wanda, unstructured): seconds per block and in total, x floor.

    python benchmarks/prune_embedded.py [--nsamples 64 --seqlen 512 --ppl-windows 32]
        [--skip-peer | --peer-python ../.peer/bin/python] [--reconstruction --recon-epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_rss_bytes, run_isolated, save  # noqa: E402

METHODS = ("magnitude", "wanda", "sparsegpt")
PEER_METHODS = ("wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")
REPO = Path(__file__).resolve().parents[1]


def beside_repo(relative: str) -> Path:
    """``relative`` next to the checkout (``/work/main`` -> ``/work/...``), or next to the folder
    holding it (a worktree under ``/work/wt``); the first that exists, else the first."""
    candidates = [REPO.parent / relative, REPO.parent.parent / relative]
    return next((path for path in candidates if path.exists()), candidates[0])


def load(nsamples: int, seqlen: int):
    from compress.calibration import load_texts, load_windows
    from compress.models import load_model

    loaded = load_model(None, "cpu", "float32")
    windows = load_windows(loaded.tokenizer, "wikipedia", nsamples, seqlen, seed=0)
    return loaded, windows, load_texts("wikipedia", "test")


def one(method: str, pattern: str, args, technique: str = "lr") -> dict:
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
        reconstruct=ReconstructConfig(technique=technique, epochs=args.recon_epochs),
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
        "technique": technique,
        "block_seconds": [block["seconds"] for block in outcome.blocks],
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


def write_windows(path: Path, args) -> dict:
    """The calibration windows every row uses, as token-id lists (the peer's ``--windows``)."""
    from transformers import AutoTokenizer

    from compress.calibration import load_windows
    from compress.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    windows = load_windows(tokenizer, "wikipedia", args.nsamples, args.seqlen, seed=0)
    path.write_text(json.dumps(windows.ids.tolist()))
    return {"windows": str(path), "model_dir": str(embedded_model_dir())}


def folder_perplexity(folder: str, args) -> dict:
    """Held-out perplexity of a pruned model folder (the peer's), on the same windows as ours."""
    from compress.calibration import load_texts
    from compress.models import load_model
    from evaluators.perplexity import perplexity

    loaded = load_model(folder, "cpu", "float32")
    test = load_texts("wikipedia", "test")
    result = perplexity(loaded.model, loaded.tokenizer, test, args.seqlen, args.ppl_windows)
    return {"ppl_after": result["perplexity"]}


def peer(method: str, pattern: str, setup: dict, work: Path, args) -> dict:
    """One peer row: llm-compressor's own seconds and peak RSS, then its folder's perplexity."""
    out = work / f"peer-{method}-{pattern.replace(':', 'of')}"
    command = [
        str(args.peer_python),
        str(args.peer_script),
        setup["model_dir"],
        "-",
        str(out),
        "--method",
        method,
        "--pattern",
        pattern,
        "--windows",
        setup["windows"],
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer's own stack
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"peer {method} {pattern} failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    ppl = run_isolated(__file__, ["--ppl-of", str(out), *common_args(args)])
    return {
        "prune_seconds": row["oneshot_seconds"],
        "peak_rss_bytes": int(row["peak_rss_gib"] * 2**30),
        **ppl,
        "peer": row,
    }


def common_args(args) -> list[str]:
    return [
        "--nsamples",
        str(args.nsamples),
        "--seqlen",
        str(args.seqlen),
        "--ppl-windows",
        str(args.ppl_windows),
        "--recon-epochs",
        str(args.recon_epochs),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--recon-epochs", type=int, default=1)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "PATTERN", "TECHNIQUE"))
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--write-windows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ppl-of", help=argparse.SUPPRESS)
    parser.add_argument("--skip-peer", action="store_true", help="leave llm-compressor out")
    parser.add_argument("--peer-python", type=Path, default=beside_repo(".peer/bin/python"))
    parser.add_argument(
        "--peer-script", type=Path, default=beside_repo("shared/bench/llmc_cpu_peer.py")
    )
    parser.add_argument("--reconstruction", action="store_true", help="add a BR+GP row")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument("--output", type=Path, default=Path("out/bench/prune_embedded.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one[:2], args, args.one[2])))
        return
    if args.baseline:
        print(json.dumps(baseline(args)))
        return
    if args.write_windows:
        print(json.dumps(write_windows(args.write_windows, args)))
        return
    if args.ppl_of:
        print(json.dumps(folder_perplexity(args.ppl_of, args)))
        return
    if not args.skip_peer and not args.peer_python.exists():
        print(
            f"error: no peer venv at {args.peer_python}; create it (shared/bench/README.md) "
            "or pass --skip-peer",
            file=sys.stderr,
        )
        sys.exit(2)
    loadavg_before = Path("/proc/loadavg").read_text().strip()
    print("load average before:", loadavg_before, flush=True)
    common = common_args(args)
    base = run_isolated(__file__, ["--baseline", *common])
    floor = base["forward_floor_seconds"]
    work = Path(tempfile.mkdtemp(prefix="prune-embedded-"))
    setup = run_isolated(__file__, ["--write-windows", str(work / "windows.json"), *common])
    rows = []
    runs = [(m, p, "lr") for p in args.patterns for m in args.methods]
    if args.reconstruction:
        runs.append(("wanda", "unstructured", "br+gp"))
    for method, pattern, technique in runs:
        row = run_isolated(__file__, ["--one", method, pattern, technique, *common])
        row["x_floor"] = row["prune_seconds"] / floor
        if not args.skip_peer and method in PEER_METHODS and technique == "lr":
            row["peer"] = peer(method, pattern, setup, work, args)
            row["x_peer"] = row["prune_seconds"] / row["peer"]["prune_seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    loadavg_after = Path("/proc/loadavg").read_text().strip()
    print("load average after:", loadavg_after)
    print(
        f"\nembedded SmolLM2-135M, fp32, CPU, calibration {args.nsamples} x {args.seqlen}, "
        f"batch 8; ppl: Wikipedia test split, {args.ppl_windows} x {args.seqlen}"
    )
    print(
        f"forward floor {floor:.1f} s, dense ppl {base['ppl_dense']:.2f}, "
        f"dense peak RSS {base['peak_rss_bytes'] / 2**30:.2f} GiB"
    )
    print(
        f"{'pattern':13s} {'method':10s} {'tech':6s} {'prune s':>8s} {'x floor':>8s} "
        f"{'s/block':>8s} {'peak RSS':>9s} {'ppl':>8s} | {'peer s':>7s} {'x peer':>7s} "
        f"{'peer RSS':>9s} {'peer ppl':>9s}"
    )
    for r in rows:
        per_block = sum(r["block_seconds"]) / max(len(r["block_seconds"]), 1)
        line = (
            f"{r['pattern']:13s} {r['method']:10s} {r['technique']:6s} {r['prune_seconds']:8.1f} "
            f"{r['x_floor']:8.2f} {per_block:8.2f} {r['peak_rss_bytes'] / 2**30:8.2f}G "
            f"{r['ppl_after']:8.2f}"
        )
        if "peer" in r:
            p = r["peer"]
            line += (
                f" | {p['prune_seconds']:7.1f} {r['x_peer']:7.2f} "
                f"{p['peak_rss_bytes'] / 2**30:8.2f}G {p['ppl_after']:9.2f}"
            )
        print(line)
    save(
        args.output,
        {
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "loadavg_before": loadavg_before,
            "baseline": base,
            "rows": rows,
            "loadavg_after": loadavg_after,
        },
    )


if __name__ == "__main__":
    main()
