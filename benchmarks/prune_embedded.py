"""How fast and how good is one-shot pruning of the embedded SmolLM2-135M on this CPU, next to
the peer?

One table in one run: ours (``compress prune``, the whole process: imports, model load,
calibration text, pruning, saving the folder) and the peer's (llm-compressor's Wanda and SparseGPT
through ``shared/bench/llmc_cpu_peer.py`` in its own venv, ``shared/bench/README.md``: its whole
process too, and its ``oneshot`` seconds alone) on the very same calibration windows
(``--windows``), for Wanda and SparseGPT, unstructured and 2:4 (no reconstruction): seconds, peak
RSS (each run a fresh process), held-out Wikipedia perplexity of the saved folder on the same
windows, and the load average before and after. Goals: ours <= 0.5x the peer's seconds, peak RSS
<= the peer's, perplexity within 2%. Ours run with ``--one-pass`` and without (``--passes 1 2``,
the default; ``--passes 2`` alone is the CLI's default); ``--skip-peer`` leaves the peer out
(needed where its venv is absent); ``--dtypes float32 bfloat16`` runs both sides in each dtype
(ours ``--dtype``, the peer's ``--dtype``): a ratio always compares the same dtype. Also printed:
the seconds of one plain forward pass over the calibration set (the floor). ``--reconstruction`` adds BR+GP (Wanda, unstructured; in-process): seconds per block and
in total, x floor.

    python benchmarks/prune_embedded.py [--nsamples 16 --seqlen 512 --ppl-windows 32]
        [--passes 1 2] [--skip-peer | --peer-python ../.peer/bin/python] [--reconstruction]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    add_peer_arguments,
    beside_repo,
    load_peer_folder,
    machine,
    peak_rss_bytes,
    require_peer_venv,
    run_compress_prune,
    run_isolated,
    run_peer,
    save,
    write_windows_file,
)

METHODS = ("magnitude", "wanda", "sparsegpt")
PEER_METHODS = ("wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")


def load(nsamples: int, seqlen: int):
    from compress.data.calibration import load_texts, load_windows
    from compress.model.loading import load_model

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
    from compress.model.loading import embedded_model_dir

    write_windows_file(path, embedded_model_dir(), args.nsamples, args.seqlen)
    return {"windows": str(path), "model_dir": str(embedded_model_dir())}


def folder_perplexity(folder: str, args) -> dict:
    """Held-out perplexity of a pruned model folder (the peer's), on the same windows as ours."""
    from compress.data.calibration import load_texts
    from evaluators.perplexity import perplexity

    model, tokenizer = load_peer_folder(folder)
    test = load_texts("wikipedia", "test")
    result = perplexity(model, tokenizer, test, args.seqlen, args.ppl_windows)
    return {"ppl_after": result["perplexity"]}


def ours(method: str, pattern: str, passes: int, dtype: str, work: Path, args) -> dict:
    """One row of ours: ``compress prune`` as a user runs it, then its folder's perplexity."""
    out = work / f"ours-{method}-{pattern.replace(':', 'of')}-{passes}-{dtype}"
    passes_flag = "--one-pass" if passes == 1 else "--no-one-pass"
    extra = ("--batch-size", "8", "--dtype", dtype, passes_flag)
    calibration = (args.nsamples, args.seqlen)
    run = run_compress_prune(None, method, pattern, calibration, out, *extra)
    summary = json.loads((out / "report.json").read_text())["summary"]
    ppl = run_isolated(__file__, ["--ppl-of", str(out), *common_args(args)])
    return {
        "method": method,
        "pattern": pattern,
        "technique": "lr",
        "passes": passes,
        "dtype": dtype,
        "process_seconds": run["seconds"],
        "prune_seconds": summary["prune_seconds"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "sparsity": summary["sparsity"],
        **ppl,
    }


def peer(method: str, pattern: str, dtype: str, setup: dict, work: Path, args) -> dict:
    """One peer row in ``dtype`` (the dtype of the rows of ours it is compared with): its whole
    process (seconds, peak RSS), its ``oneshot`` seconds alone, then its folder's perplexity."""
    out = work / f"peer-{method}-{pattern.replace(':', 'of')}-{dtype}"
    run, row = run_peer(
        args.peer_python,
        args.peer_script,
        setup["model_dir"],
        method,
        pattern,
        setup["windows"],
        dtype,
        out,
    )
    ppl = run_isolated(__file__, ["--ppl-of", str(out), *common_args(args)])
    return {
        "process_seconds": run["seconds"],
        "prune_seconds": row["oneshot_seconds"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        **ppl,
        "peer": row,
    }


def table(rows: list[dict], base: dict, args) -> str:
    """The issue's table: ours and the peer's seconds (whole process, and pruning alone), peak
    RSS and perplexity, with the ratios the goals are stated in."""
    gib = 2**30
    lines = [
        f"\nembedded SmolLM2-135M, CPU (the peer in each row's dtype), calibration {args.nsamples} x {args.seqlen}, "
        f"batch 8, no reconstruction; ppl: Wikipedia test split, {args.ppl_windows} x "
        f"{args.seqlen}; process = interpreter start to exit (load, calibrate, prune, save)",
        f"forward floor {base['forward_floor_seconds']:.1f} s, dense ppl {base['ppl_dense']:.2f}",
        f"{'pattern':12s} {'method':9s} {'pass':>4s} {'dtype':>8s} {'proc s':>7s} {'prune s':>7s} "
        f"{'RSS':>6s} {'ppl':>7s} | {'peer proc':>9s} {'oneshot':>7s} {'RSS':>6s} {'ppl':>7s} | "
        f"{'x peer':>6s} {'x prune':>7s} {'ppl/peer':>8s}",
    ]
    for r in rows:
        if "process_seconds" not in r:  # the in-process reconstruction row
            per_block = sum(r["block_seconds"]) / max(len(r["block_seconds"]), 1)
            lines.append(
                f"{r['pattern']:12s} {r['method']:9s} {r['technique']}: {r['prune_seconds']:.1f} s "
                f"({per_block:.2f} s/block, {r['x_floor']:.2f} x floor), ppl {r['ppl_after']:.2f}"
            )
            continue
        line = (
            f"{r['pattern']:12s} {r['method']:9s} {r['passes']:4d} {r['dtype']:>8s} "
            f"{r['process_seconds']:7.1f} "
            f"{r['prune_seconds']:7.1f} {r['peak_rss_bytes'] / gib:5.2f}G {r['ppl_after']:7.2f}"
        )
        if "peer" in r:
            p = r["peer"]
            line += (
                f" | {p['process_seconds']:9.1f} {p['prune_seconds']:7.1f} "
                f"{p['peak_rss_bytes'] / gib:5.2f}G {p['ppl_after']:7.2f} | {r['x_peer']:6.2f} "
                f"{r['x_peer_prune']:7.2f} {r['ppl_vs_peer']:8.3f}"
            )
        lines.append(line)
    return "\n".join(lines)


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


def measure_rows(work: Path, common: list[str], floor: float, args) -> list[dict]:
    """Every row of the run, ours beside the peer's, with the folders written under ``work``
    (a few GB: the caller removes it)."""
    setup = run_isolated(__file__, ["--write-windows", str(work / "windows.json"), *common])
    rows = []
    for pattern, method, dtype in itertools.product(args.patterns, args.methods, args.dtypes):
        other = None
        if not args.skip_peer and method in PEER_METHODS:
            other = peer(method, pattern, dtype, setup, work, args)
            print(json.dumps({"peer": method, "pattern": pattern, **other}), flush=True)
        for passes in args.passes:
            row = ours(method, pattern, passes, dtype, work, args)
            row["x_floor"] = row["prune_seconds"] / floor
            if other is not None:
                row["peer"] = other
                row["x_peer"] = row["process_seconds"] / other["process_seconds"]
                row["x_peer_prune"] = row["prune_seconds"] / other["prune_seconds"]
                row["ppl_vs_peer"] = row["ppl_after"] / other["ppl_after"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.reconstruction:
        row = run_isolated(__file__, ["--one", "wanda", "unstructured", "br+gp", *common])
        row["x_floor"] = row["prune_seconds"] / floor
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--recon-epochs", type=int, default=1)
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "PATTERN", "TECHNIQUE"))
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--skip-peer", action="store_true", help="leave llm-compressor out")
    add_peer_arguments(parser)
    parser.add_argument(
        "--peer-script", type=Path, default=beside_repo("shared/bench/llmc_cpu_peer.py")
    )
    parser.add_argument("--reconstruction", action="store_true", help="add a BR+GP row")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(PEER_METHODS))
    parser.add_argument(
        "--passes",
        nargs="+",
        type=int,
        choices=(1, 2),
        default=[1, 2],
        help="ours: --one-pass (1), --no-one-pass (2)",
    )
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument(
        "--dtypes",
        nargs="+",
        choices=("float32", "bfloat16"),
        default=["float32"],
        help="the dtype both sides load and prune in (compress prune --dtype, the peer's --dtype)",
    )
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
    if not args.skip_peer:
        require_peer_venv(args.peer_python, "pass --skip-peer")
    loadavg_before = Path("/proc/loadavg").read_text().strip()
    print("load average before:", loadavg_before, flush=True)
    common = common_args(args)
    base = run_isolated(__file__, ["--baseline", *common])
    floor = base["forward_floor_seconds"]
    with tempfile.TemporaryDirectory(prefix="prune-embedded-") as folder:
        rows = measure_rows(Path(folder), common, floor, args)
    loadavg_after = Path("/proc/loadavg").read_text().strip()
    print("load average after:", loadavg_after)
    print(table(rows, base, args))
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
