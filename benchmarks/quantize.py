"""How good and how fast is pruning + quantization of the embedded SmolLM2-135M on this CPU,
next to the peer's GPTQ?

One table in one run (each row a fresh `compress` process, as a user runs it; its folder's
perplexity measured in another fresh process on the same held-out windows):

- dense, 50% unstructured and 2:4 (SparseGPT, ``--reconstruct lr``) x {unquantized, int8
  (GPTQ; joint with the pruning), int4 round-to-nearest, int4 GPTQ (joint with the pruning)},
  groups of ``--group-size`` input columns (32: the embedded model's 576 columns do not divide
  by 128, and 32 is GGUF's block);
- llm-compressor's GPTQ W4A16 (int4, symmetric, the same groups) through
  ``shared/bench/llmc_cpu_peer.py --method gptq`` in its own venv, on the very same
  calibration windows, read back by :mod:`peer_gptq` (the packed integers and scales
  unpacked) and scored with the embedded model's own tokenizer.

Columns: whole-process seconds, held-out Wikipedia perplexity, and with ``--exports`` the bytes
on disk of each quantized row's exports (GGUF, compressed-tensors pack-quantized). Goals: at 0%
our int4 perplexity <= the peer's and within 10% of the dense model's, in <= 0.5 x its
seconds; at 50% + int4, joint quantization closes at least half of the perplexity gap between
round-to-nearest after pruning and the unquantized pruned model. Unquantized rows are float32:
this CPU emulates bfloat16 (tens of times slower), so every row runs in float32 on both sides.

    python benchmarks/quantize.py [--nsamples 16 --seqlen 512 --ppl-windows 32]
        [--skip-peer | --peer-python ../.peer/bin/python] [--exports] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    REPO,
    add_peer_arguments,
    beside_repo,
    load_average,
    machine,
    measured,
    require_peer_venv,
    run_isolated,
    save,
    write_windows_file,
)

SPARSITIES = ("dense", "50%", "2:4")
PEER_FOLDER = "peer-gptq"
GRIDS = ("none", "int8", "int4-rtn", "int4")


def command_of(sparsity: str, grid: str, out: Path, args) -> list[str] | None:
    """The `compress` command of one row (None: the dense unquantized model, nothing to run)."""
    calibration = ["--calib", "wikipedia", "--seed", "0", "--device", "cpu", "--dtype", "float32"]
    calibration += ["--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen)]
    bits, _, rtn = grid.partition("-")
    quant = [] if bits == "none" else ["--quantize", bits, "--group-size", str(args.group_size)]
    quant += ["--quantizer", "rtn"] if rtn else []
    base = [sys.executable, "-m", "compress.cli"]
    if sparsity == "dense":
        if bits == "none":
            return None
        return [*base, "quantize", *quant, *calibration, "--output", str(out)]
    pattern = ["--pattern", "2:4"] if sparsity == "2:4" else ["--sparsity", "0.5"]
    prune = ["prune", "--method", "sparsegpt", *pattern, "--reconstruct", "lr", "--one-pass"]
    return [*base, *prune, *quant, *calibration, "--output", str(out)]


def folder_perplexity(folder: str, args) -> dict:
    """Held-out perplexity of a model folder on the benchmark's windows, scored with the
    embedded model's tokenizer (the peer's folder: its unpacked weights)."""
    import torch
    from transformers import AutoTokenizer

    from compress.data.calibration import load_texts
    from compress.model.loading import embedded_model_dir, load_model
    from evaluators.perplexity import perplexity

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    if folder == "dense":
        model = load_model(None, "cpu", "float32").model
    elif Path(folder).name == PEER_FOLDER:  # the peer's integers in the embedded model
        from peer_gptq import load_pack_quantized

        model = load_model(None, "cpu", "float32").model
        load_pack_quantized(model, Path(folder))
    else:
        model = load_model(folder, "cpu", "float32").model
    with torch.no_grad():
        test = load_texts("wikipedia", "test")
        result = perplexity(model, tokenizer, test, args.seqlen, args.ppl_windows)
    return {"ppl": result["perplexity"]}


def export_bytes(folder: Path, grid: str) -> dict:
    """Bytes on disk of the quantized folder's exports that this stack can write."""
    sizes = {}
    for name in ("gguf", "compressed"):
        out = folder.with_name(folder.name + f"-{name}")
        done = (
            measured(
                [
                    sys.executable,
                    "-m",
                    "compress.cli",
                    "export",
                    name,
                    str(folder),
                    "--output",
                    str(out),
                ],
                {**os.environ, "PYTHONPATH": str(REPO)},
            )
            if _can_export(name)
            else None
        )
        if done is not None:
            sizes[name] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            shutil.rmtree(out, ignore_errors=True)
    return sizes


def _can_export(name: str) -> bool:
    from exporters.registry import EXPORTERS

    return name in EXPORTERS


def ours(sparsity: str, grid: str, work: Path, args) -> dict:
    out = work / f"ours-{sparsity.replace(':', 'of').replace('%', '')}-{grid}"
    command = command_of(sparsity, grid, out, args)
    row = {"sparsity": sparsity, "grid": grid}
    folder = "dense"
    if command is not None:
        run = measured(command, {**os.environ, "PYTHONPATH": str(REPO)})
        report = json.loads((out / "report.json").read_text())
        row |= {
            "process_seconds": run["seconds"],
            "peak_rss_bytes": run["peak_rss_bytes"],
            "measured_sparsity": report["summary"]["sparsity"],
            "quantization": report.get("quantization"),
        }
        folder = str(out)
    row |= run_isolated(__file__, ["--ppl-of", folder, *common_args(args)])
    if args.exports and grid != "none":
        row["export_bytes"] = export_bytes(out, grid)
    if command is not None:
        shutil.rmtree(out, ignore_errors=True)
    return row


def peer(setup: dict, work: Path, args) -> dict:
    """The peer's GPTQ W4A16: whole-process seconds, peak RSS, its folder's bytes, perplexity."""
    from peer_gptq import run_peer_gptq

    out = work / PEER_FOLDER
    run = run_peer_gptq(
        args.peer_python,
        Path(setup["model_dir"]),
        Path(setup["windows"]),
        out,
        args.group_size,
        "float32",
        args.peer_script,
    )
    row = {
        "sparsity": "dense",
        "grid": "peer GPTQ W4A16",
        "process_seconds": run.seconds,
        "peak_rss_bytes": run.peak_rss_bytes,
        "peer": run.line,
    }
    row["folder_bytes"] = sum(p.stat().st_size for p in out.rglob("*.safetensors"))
    row |= run_isolated(__file__, ["--ppl-of", str(out), *common_args(args)])
    return row


def goals(rows: list[dict]) -> dict:
    """The issue's goals from the rows, each with its figures (None where a row is missing)."""
    at = {(r["sparsity"], r["grid"]): r for r in rows}
    dense, int4 = at.get(("dense", "none")), at.get(("dense", "int4"))
    peer_row = at.get(("dense", "peer GPTQ W4A16"))
    result = {}
    if dense and int4:
        result["int4_within_10pct_of_dense"] = {
            "ratio": int4["ppl"] / dense["ppl"],
            "met": int4["ppl"] <= 1.10 * dense["ppl"],
        }
    if int4 and peer_row:
        result["int4_ppl_le_peer"] = {
            "ours": int4["ppl"],
            "peer": peer_row["ppl"],
            "met": int4["ppl"] <= peer_row["ppl"],
        }
        ratio = int4["process_seconds"] / peer_row["process_seconds"]
        result["int4_seconds_le_half_peer"] = {"ratio": ratio, "met": ratio <= 0.5}
    for sparsity in ("50%", "2:4"):
        pruned, rtn, joint = (at.get((sparsity, g)) for g in ("none", "int4-rtn", "int4"))
        if pruned and rtn and joint and rtn["ppl"] > pruned["ppl"]:
            closed = (rtn["ppl"] - joint["ppl"]) / (rtn["ppl"] - pruned["ppl"])
            result[f"joint_closes_rtn_gap_{sparsity}"] = {"closed": closed, "met": closed >= 0.5}
    return result


def table(rows: list[dict], args) -> str:
    lines = [
        f"\nembedded SmolLM2-135M, CPU, float32, calibration {args.nsamples} x {args.seqlen} "
        f"(Wikipedia, seed 0), groups of {args.group_size}; ppl: Wikipedia test, "
        f"{args.ppl_windows} x {args.seqlen}; seconds = the whole process",
        f"{'sparsity':8s} {'grid':16s} {'seconds':>8s} {'RSS GiB':>7s} {'ppl':>8s} "
        f"{'err mean':>8s} {'gguf MiB':>8s} {'ct MiB':>7s}",
    ]
    for r in rows:
        q = r.get("quantization") or {}
        sizes = r.get("export_bytes") or {}
        mib = {k: f"{v / 2**20:.1f}" for k, v in sizes.items()}
        if "folder_bytes" in r:
            mib["compressed"] = f"{r['folder_bytes'] / 2**20:.1f}"
        err = q.get("mean_error")
        lines.append(
            f"{r['sparsity']:8s} {r['grid']:16s} {r.get('process_seconds', 0):8.1f} "
            f"{r.get('peak_rss_bytes', 0) / 2**30:7.2f} {r['ppl']:8.2f} "
            f"{'joint' if q.get('joint') else (f'{err:.4f}' if err is not None else '-'):>8s} "
            f"{mib.get('gguf', '-'):>8s} {mib.get('compressed', '-'):>7s}"
        )
    return "\n".join(lines)


def common_args(args) -> list[str]:
    return ["--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen)] + [
        "--ppl-windows",
        str(args.ppl_windows),
        "--group-size",
        str(args.group_size),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--ppl-windows", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--exports", action="store_true", help="also the exports' bytes on disk")
    parser.add_argument(
        "--peer-script", type=Path, default=beside_repo("shared/bench/llmc_cpu_peer.py")
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs/results/quantize.json")
    add_peer_arguments(parser)
    args = parser.parse_args()
    if args.ppl_of:
        print(json.dumps(folder_perplexity(args.ppl_of, args)))
        return
    if args.write_windows:
        from compress.model.loading import embedded_model_dir

        write_windows_file(args.write_windows, embedded_model_dir(), args.nsamples, args.seqlen)
        print(
            json.dumps({"windows": str(args.write_windows), "model_dir": str(embedded_model_dir())})
        )
        return
    if not args.skip_peer:
        require_peer_venv(args.peer_python, "pass --skip-peer")
    start_load = load_average()
    print(f"load average before: {start_load}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantize-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_peer:
            windows = ["--write-windows", str(work / "windows.json"), *common_args(args)]
            rows.append(peer(run_isolated(__file__, windows), work, args))
            print(json.dumps(rows[-1]), flush=True)
        for sparsity in SPARSITIES:
            for grid in GRIDS:
                rows.append(ours(sparsity, grid, work, args))
                print(json.dumps(rows[-1]), flush=True)
    end_load = load_average()
    print(table(rows, args))
    met = goals(rows)
    print(json.dumps(met, indent=1))
    print(f"load average before {start_load}, after {end_load}")
    save(
        args.output,
        {
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "load_average_start": start_load,
            "load_average_end": end_load,
            "rows": rows,
            "goals": met,
        },
    )


if __name__ == "__main__":
    main()
