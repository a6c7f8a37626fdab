"""Does a non-uniform sparsity profile pay on the embedded SmolLM2-135M?

Wanda and SparseGPT (LR: the pruner's own update, no training) at 50/60/70% unstructured,
``--sparsity-profile`` uniform vs owl vs errors, calibration 32 x 512 Wikipedia, perplexity on
held-out Wikipedia (its test split), each run in a fresh process. With ``--peer PYTHON`` (the
peer's own venv, see ../shared/bench/README.md) the peer's OWL at the same settings runs too,
through ../shared/bench/llmc_cpu_peer.py on the very same windows, when that script accepts
``--sparsity-profile`` (it is recorded as not run otherwise).

    python benchmarks/sparsity_profile.py [--sparsities 0.5,0.6,0.7 --nsamples 32 --seqlen 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_rss_bytes, run_isolated, save  # noqa: E402

METHODS = ("wanda", "sparsegpt")
PROFILES = ("uniform", "owl", "errors")
PEER_SCRIPT = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "llmc_cpu_peer.py"


def calibration(args):
    from compress.calibration import load_windows
    from compress.models import load_model

    loaded = load_model(None, "cpu", "float32")
    calib = load_windows(loaded.tokenizer, "wikipedia", args.nsamples, args.seqlen, seed=0)
    return loaded, calib


def held_out_ppl(model, tokenizer, args) -> float:
    from compress.calibration import load_texts
    from evaluators.perplexity import perplexity

    texts = load_texts("wikipedia", "test")
    return perplexity(model, tokenizer, texts, args.seqlen, args.ppl_windows)["perplexity"]


def one(method: str, profile: str, sparsity: float, args) -> dict:
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.engine import prune_model

    loaded, calib = calibration(args)
    config = PruneConfig(
        method=method,
        sparsity=sparsity,
        sparsity_profile=profile,
        calibration=CalibrationConfig(
            nsamples=args.nsamples, seqlen=args.seqlen, seed=0, batch_size=args.batch
        ),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    start = time.perf_counter()
    outcome = prune_model(loaded.model, calib.ids, config)
    seconds = time.perf_counter() - start
    layers = outcome.layers.values()
    zeros, numel = sum(x["zeros"] for x in layers), sum(x["numel"] for x in layers)
    return {
        "method": method,
        "profile": profile,
        "sparsity": sparsity,
        "measured_sparsity": zeros / numel,
        "zeros_off_target": zeros - round(sparsity * numel),
        "block_sparsity": [round(b["sparsity"]["sparsity"], 4) for b in outcome.blocks],
        "ppl_wikipedia": held_out_ppl(loaded.model, loaded.tokenizer, args),
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def peer(method: str, sparsity: float, args) -> dict:
    """The peer's OWL on the project's windows, its perplexity measured by the project."""
    row = {"method": method, "profile": "owl (peer)", "sparsity": sparsity}
    accepts = subprocess.run(
        [args.peer, str(PEER_SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    if "--sparsity-profile" not in accepts.stdout:
        return {**row, "not_run": f"{PEER_SCRIPT.name} has no --sparsity-profile"}
    from compress.models import embedded_model_dir, load_model

    _, calib = calibration(args)
    with tempfile.TemporaryDirectory() as tmp:
        windows, out = Path(tmp) / "windows.json", Path(tmp) / "peer"
        windows.write_text(json.dumps(calib.ids.tolist()))
        command = [args.peer, str(PEER_SCRIPT), str(embedded_model_dir()), "-", str(out)]
        command += ["--method", method, "--sparsity", str(sparsity), "--windows", str(windows)]
        command += ["--sparsity-profile", "owl"]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        loaded = load_model(str(out), "cpu", "float32")
        ppl = held_out_ppl(loaded.model, loaded.tokenizer, args)
    return {**row, **result, "ppl_wikipedia": ppl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--sparsities", default="0.5,0.6,0.7")
    parser.add_argument("--peer", help="the peer venv's python, e.g. .peer/bin/python")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "PROFILE", "SPARSITY"))
    parser.add_argument("--output", type=Path, default=Path("out/bench/sparsity_profile.json"))
    args = parser.parse_args()
    if args.one:
        method, profile, sparsity = args.one
        print(json.dumps(one(method, profile, float(sparsity), args)))
        return
    common = [
        f"--nsamples={args.nsamples}",
        f"--seqlen={args.seqlen}",
        f"--batch={args.batch}",
        f"--ppl-windows={args.ppl_windows}",
    ]
    rows = []
    for sparsity in args.sparsities.split(","):
        for method in args.methods.split(","):
            for profile in args.profiles.split(","):
                rows.append(run_isolated(__file__, ["--one", method, profile, sparsity, *common]))
                print(json.dumps(rows[-1]), flush=True)
            if args.peer:
                rows.append(peer(method, float(sparsity), args))
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nembedded SmolLM2-135M, fp32, CPU; LR; calibration {args.nsamples} x {args.seqlen} "
        f"Wikipedia; ppl {args.ppl_windows} x {args.seqlen} held-out windows"
    )
    print(
        f"{'sparsity':>8s} {'method':10s} {'profile':12s} {'measured':>9s} {'ppl':>9s} {'sec':>6s}"
    )
    for r in rows:
        if "not_run" in r:
            print(
                f"{r['sparsity']:8.2f} {r['method']:10s} {r['profile']:12s} not run: {r['not_run']}"
            )
            continue
        measured = r.get("measured_sparsity", float("nan"))
        print(
            f"{r['sparsity']:8.2f} {r['method']:10s} {r['profile']:12s} {measured:9.5f} "
            f"{r['ppl_wikipedia']:9.2f} {r.get('seconds', float('nan')):6.0f}"
        )
    save(
        args.output,
        {"machine": machine(), "settings": vars(args) | {"output": str(args.output)}, "rows": rows},
    )


if __name__ == "__main__":
    main()
