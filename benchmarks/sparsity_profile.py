"""Does a non-uniform sparsity profile pay on the embedded SmolLM2-135M, against the peer's OWL?

Wanda and SparseGPT (LR: the pruner's own update, no training) at 50/60/70% unstructured,
``--sparsity-profile`` uniform vs owl vs errors, and llm-compressor's own OWL (``peer-owl``) at
the same settings (``--owl-m``, ``--owl-lambda``) on the very same calibration windows (32 x 512
Wikipedia), through ``peer_owl.py`` in the peer's venv (../shared/bench/README.md); perplexity on
held-out Wikipedia (its test split) of every result, ours and the peer's, measured by the
project. Each configuration runs in a fresh process. Goal: at 70%, ``owl`` within 5%
of ``peer-owl``'s perplexity, ``errors`` below both.

    python benchmarks/sparsity_profile.py                       # the whole table
    python benchmarks/sparsity_profile.py --sparsities 0.7      # one column of it

Each result is written to ``--output`` as soon as it finishes; the same command again skips
those already there (same settings), so an interrupted run resumes; ``--redo`` reruns them.
``--profiles uniform,owl,errors`` leaves the peer out; ``peer-uniform`` adds the peer's uniform
pruning as a check that both sides prune alike.
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

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    add_peer_arguments,
    load_average,
    load_peer_folder,
    peak_rss_bytes,
    require_peer_venv,
    run_isolated,
    sweep,
)

METHODS = ("wanda", "sparsegpt")
PROFILES = ("uniform", "owl", "errors", "peer-owl")
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_owl.py"
KEYED = ("nsamples", "seqlen", "batch", "ppl_windows", "owl_m", "owl_lambda")


def held_out_ppl(model, tokenizer, args) -> float:
    from compress.data.calibration import load_texts
    from evaluators.perplexity import perplexity

    texts = load_texts("wikipedia", "test")
    return perplexity(model, tokenizer, texts, args.seqlen, args.ppl_windows)["perplexity"]


def windows(args):
    from compress.data.calibration import load_windows
    from compress.model.loading import load_model

    loaded = load_model(None, "cpu", "float32")
    calib = load_windows(loaded.tokenizer, "wikipedia", args.nsamples, args.seqlen, seed=0)
    return loaded, calib


def one(method: str, profile: str, sparsity: float, args) -> dict:
    """One of ours in this process; ``method`` "dense" measures the unpruned model."""
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.engine import prune_model

    load_before = load_average()
    loaded, calib = windows(args)
    row: dict = {"method": method, "profile": profile, "sparsity": sparsity}
    if method != "dense":
        config = PruneConfig(
            method=method,
            sparsity=sparsity,
            sparsity_profile=profile,
            owl_m=args.owl_m,
            owl_lambda=args.owl_lambda,
            calibration=CalibrationConfig(
                nsamples=args.nsamples, seqlen=args.seqlen, seed=0, batch_size=args.batch
            ),
            reconstruct=ReconstructConfig(technique="lr"),
        )
        start = time.perf_counter()
        outcome = prune_model(loaded.model, calib.ids, config)
        row["seconds"] = round(time.perf_counter() - start, 1)
        layers = outcome.layers.values()
        zeros, numel = sum(x["zeros"] for x in layers), sum(x["numel"] for x in layers)
        row["measured_sparsity"] = zeros / numel
        row["zeros_off_target"] = zeros - round(sparsity * numel)
        row["block_sparsity"] = [round(b["sparsity"]["sparsity"], 4) for b in outcome.blocks]
    row["ppl_wikipedia"] = held_out_ppl(loaded.model, loaded.tokenizer, args)
    row["peak_rss_bytes"] = peak_rss_bytes()
    row["load_average"] = {"before": load_before, "after": load_average()}
    return row


def write_windows(path: Path, args) -> dict:
    """The calibration windows ours use, as token-id lists (the peer's ``--windows``)."""
    from compress.model.loading import embedded_model_dir

    _, calib = windows(args)
    path.write_text(json.dumps(calib.ids.tolist()))
    return {"windows": str(path), "model_dir": str(embedded_model_dir())}


def folder_ppl(folder: str, args) -> dict:
    model, tokenizer = load_peer_folder(folder)
    return {"ppl_wikipedia": held_out_ppl(model, tokenizer, args)}


def peer(method: str, profile: str, sparsity: float, args, common: list[str]) -> dict:
    """llm-compressor's pruning (its OWL for ``peer-owl``) on our windows; our perplexity."""
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        setup = run_isolated(__file__, ["--write-windows", f"{tmp}/windows.json", *common])
        out = Path(tmp) / "peer"
        command = [str(args.peer_python), str(PEER_SCRIPT), setup["model_dir"], str(out)]
        command += ["--windows", setup["windows"], "--method", method]
        command += ["--sparsity", str(sparsity), "--sparsity-profile", profile.split("-")[1]]
        command += ["--owl-m", str(args.owl_m), "--owl-lambda", str(args.owl_lambda)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer's own stack
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"peer {method} {profile} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        ppl = run_isolated(__file__, ["--ppl-of", str(out), *common])
    return {
        "method": method,
        "profile": profile,
        "sparsity": sparsity,
        "measured_sparsity": result["measured_sparsity"],
        "block_sparsity": result["block_sparsity"],
        "seconds": result["oneshot_seconds"],
        "peak_rss_bytes": int(result["peak_rss_gib"] * 2**30),
        **ppl,
        "load_average": {"before": load_before, "after": load_average()},
        "peer": result,
    }


def configurations(args) -> list[tuple[str, str, float]]:
    rows = [("dense", "none", 0.0)]
    for sparsity in args.sparsities.split(","):
        for method in args.methods.split(","):
            rows += [(method, profile, float(sparsity)) for profile in args.profiles.split(",")]
    return rows


def table(rows: list[dict], args) -> str:
    peer_ppl = {
        (r["method"], r["sparsity"]): r["ppl_wikipedia"] for r in rows if r["profile"] == "peer-owl"
    }
    lines = [
        f"embedded SmolLM2-135M, fp32, CPU ({os.cpu_count()} cores); LR; calibration "
        f"{args.nsamples} x {args.seqlen} Wikipedia; OWL M {args.owl_m}, lambda "
        f"{args.owl_lambda}; ppl {args.ppl_windows} x {args.seqlen} held-out windows",
        f"{'sparsity':>8s} {'method':10s} {'profile':12s} {'measured':>9s} {'ppl':>9s} "
        f"{'x peer-owl':>10s} {'sec':>6s} {'load before/after':>18s}",
    ]
    for r in rows:
        ref = peer_ppl.get((r["method"], r["sparsity"]))
        ratio = f"{r['ppl_wikipedia'] / ref:.3f}" if ref and r["profile"] != "peer-owl" else ""
        load = r["load_average"]
        lines.append(
            f"{r['sparsity']:8.2f} {r['method']:10s} {r['profile']:12s} "
            f"{r.get('measured_sparsity', 0.0):9.5f} {r['ppl_wikipedia']:9.2f} {ratio:>10s} "
            f"{r.get('seconds', 0):6.0f} {load['before'][0]:8.2f} / {load['after'][0]:<7.2f}"
        )
    return "\n".join(lines)


def measure(method: str, profile: str, sparsity: float, args, common: list[str]) -> dict:
    """One row: the peer's pruning for a ``peer-`` profile, else ours in a fresh process."""
    if profile.startswith("peer-"):
        return peer(method, profile, sparsity, args, common)
    return run_isolated(__file__, ["--one", method, profile, str(sparsity), *common])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--owl-m", type=float, default=None, help="default: --owl-m's")
    parser.add_argument("--owl-lambda", type=float, default=None, help="default: --owl-lambda's")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--profiles",
        default=",".join(PROFILES),
        help="of uniform, owl, errors, peer-owl, peer-uniform",
    )
    parser.add_argument("--sparsities", default="0.5,0.6,0.7")
    add_peer_arguments(parser)
    parser.add_argument("--redo", action="store_true", help="rerun configurations already saved")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "PROFILE", "SPARSITY"))
    parser.add_argument("--output", type=Path, default=Path("out/bench/sparsity_profile.json"))
    args = parser.parse_args()
    from compress.core.config import PruneConfig

    defaults = PruneConfig()
    args.owl_m = defaults.owl_m if args.owl_m is None else args.owl_m
    args.owl_lambda = defaults.owl_lambda if args.owl_lambda is None else args.owl_lambda
    if args.one:
        method, profile, sparsity = args.one
        print(json.dumps(one(method, profile, float(sparsity), args)))
        return
    if args.write_windows:
        print(json.dumps(write_windows(args.write_windows, args)))
        return
    if args.ppl_of:
        print(json.dumps(folder_ppl(args.ppl_of, args)))
        return
    if "peer-" in args.profiles:
        require_peer_venv(args.peer_python, "leave peer-owl out of --profiles")
    settings = {k: getattr(args, k) for k in KEYED}
    common = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    rows = sweep(
        args.output,
        settings,
        list(configurations(args)),
        key=lambda r: (r["method"], r["profile"], r["sparsity"]),
        measure=lambda c: measure(*c, args, common),
        redo=args.redo,
    )
    print(table(rows, args))


if __name__ == "__main__":
    main()
