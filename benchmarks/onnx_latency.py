"""Is the ONNX Runtime export faster than PyTorch on a CPU, and do pruning and int8 change that?

The embedded SmolLM2-135M-Instruct, three ways, measured in one run on the same prompt:

- dense: PyTorch, and ONNX Runtime fp32 (exported and parity-checked by exporters.onnx);
- pruned: Wanda 50 % unstructured through compress.app.prune.run_prune (few calibration windows,
  to keep the run short), PyTorch and ONNX Runtime fp32;
- pruned + int8: ONNX Runtime with ``--quantize int8`` (dynamic: int8 weights and activations)
  and with ``int8-weights`` (8-bit weights only, float activations).

For each: file size, prompt (prefill) latency, greedy generation tokens/s, and perplexity (PyTorch:
run_prune's before/after; ONNX: exporters.onnx.quantize.window_perplexity on the same held-out windows).
Unstructured zeros are expected to change neither size nor speed; int8 should change both.

Both runtimes get the same number of intra-op threads (``--threads``). Prints a table and writes
``results.json`` under ``--output``.

Run: ``.venv/bin/python benchmarks/onnx_latency.py`` (needs the ``export`` extra; ~10 min here).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from compress.app.prune import run_prune
from compress.cli.render import table
from compress.core.config import CalibrationConfig, EvalConfig, PruneConfig, ReconstructConfig
from compress.core.io import write_json_atomic
from compress.core.report import read_report
from compress.data.calibration import load_texts, tokenize_stream
from compress.model.loading import embedded_model_dir, load_model
from exporters.onnx import OnnxExportConfig, export_onnx, load_ort
from exporters.onnx.files import INT8_FILE, MODEL_FILE, model_bytes
from exporters.onnx.quantize import eval_windows as held_out_windows
from exporters.onnx.quantize import quantize_int8, window_perplexity
from exporters.onnx.timing import machine, measure_latency


def prune_embedded(folder: Path, nsamples: int, seqlen: int, eval_windows: int) -> dict:
    config = PruneConfig(
        calibration=CalibrationConfig(nsamples=nsamples, seqlen=seqlen),
        reconstruct=ReconstructConfig(technique="lr"),
        evaluation=EvalConfig(enabled=True, seqlen=seqlen, max_windows=eval_windows),
        device="cpu",
        output=str(folder),
        overwrite=True,
    )
    return run_prune(config, log=lambda message: print(message, flush=True))


def torch_row(name: str, folder: Path, ids: torch.Tensor, new_tokens: int, ppl) -> dict:
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    pad = loaded.tokenizer.eos_token_id
    bytes_ = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    latency = measure_latency(loaded.model, ids, new_tokens, pad)
    return {"variant": name, "runtime": "pytorch", "bytes": bytes_, **latency, "perplexity": ppl}


def ort_row(name: str, folder: Path, file_name: str, ids, new_tokens: int, pad, windows) -> dict:
    model = load_ort(folder, file_name)
    latency = measure_latency(model, ids, new_tokens, pad)
    return {
        "variant": name,
        "runtime": "onnxruntime",
        "bytes": model_bytes(folder, file_name),
        **latency,
        "perplexity": window_perplexity(model, windows),
    }


def weight_only_copy(export: Path, target: Path) -> Path:
    """The fp32 export copied beside itself and quantized with ``int8-weights``."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(export, target, ignore=shutil.ignore_patterns(INT8_FILE))
    quantize_int8(target, "int8-weights")
    return target


def main(
    output: Annotated[Path, typer.Option(help="Work folder and results.json.")] = Path(
        "out/bench/onnx_latency"
    ),
    threads: Annotated[int, typer.Option(help="Intra-op threads for both runtimes.")] = 2,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for the timings.")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens generated per timing.")] = 16,
    nsamples: Annotated[int, typer.Option(help="Calibration windows for Wanda.")] = 16,
    seqlen: Annotated[int, typer.Option(help="Tokens per calibration/eval window.")] = 256,
    eval_windows: Annotated[int, typer.Option(help="Perplexity windows (PyTorch and ONNX).")] = 4,
    pruned: Annotated[
        Path | None,
        typer.Option(help="Reuse this compress prune folder (pruned with --eval) instead."),
    ] = None,
) -> None:
    """Prune, export, and time PyTorch vs ONNX Runtime (dense, pruned, pruned + int8)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    dense_dir, pruned_dir = embedded_model_dir(), pruned or output / "pruned"
    report = (
        read_report(pruned)
        if pruned
        else prune_embedded(pruned_dir, nsamples, seqlen, eval_windows)
    )
    ppl = report["evaluation"]["perplexity"]
    export_config = OnnxExportConfig(
        quantize="int8", eval_windows=eval_windows, eval_seqlen=seqlen, latency_tokens=16
    )
    print("exporting the dense model", flush=True)
    dense_export = export_onnx(dense_dir, output / "dense-onnx", export_config, overwrite=True)
    print("exporting the pruned model", flush=True)
    pruned_export = export_onnx(pruned_dir, pruned_dir / "onnx", export_config, overwrite=True)
    weights_only = weight_only_copy(pruned_dir / "onnx", output / "pruned-onnx-int8-weights")

    tokenizer = load_model(str(dense_dir)).tokenizer
    ids = tokenize_stream(tokenizer, load_texts("wikipedia", "test"))[:prompt_tokens][None]
    windows = held_out_windows(tokenizer, "wikipedia", ppl["windows"], ppl["seqlen"])
    pad = tokenizer.eos_token_id
    onnx_dir = pruned_dir / "onnx"
    print("timing", flush=True)
    rows = [
        torch_row("dense", dense_dir, ids, new_tokens, ppl["before"]),
        ort_row("dense", output / "dense-onnx", MODEL_FILE, ids, new_tokens, pad, windows),
        torch_row("pruned", pruned_dir, ids, new_tokens, ppl["after"]),
        ort_row("pruned", onnx_dir, MODEL_FILE, ids, new_tokens, pad, windows),
        ort_row("pruned+int8", onnx_dir, INT8_FILE, ids, new_tokens, pad, windows),
        ort_row("pruned+int8-weights", weights_only, INT8_FILE, ids, new_tokens, pad, windows),
    ]
    header = ["variant", "runtime", "MiB", "prompt ms", "tokens/s", "perplexity"]
    lines = [
        [r["variant"], r["runtime"], r["bytes"] / 2**20, r["prefill_ms"], r["tokens_per_second"],
         r["perplexity"]]
        for r in rows
    ]  # fmt: skip
    where = f"{machine()}; {threads} threads; fp32/int8 weights, batch 1, {prompt_tokens}-token"
    where += f" prompt, {new_tokens} new tokens; medians of 3 runs"
    text = table(header, lines)
    protocol = (
        f"perplexity: first {ppl['windows']} non-overlapping {ppl['seqlen']}-token windows of "
        "the wikipedia test split (PyTorch rows: run_prune's --eval; ONNX rows: same windows)"
    )
    print(f"\n{text}\n{where}\n{protocol}\ntotal {time.perf_counter() - start:.0f}s")
    write_json_atomic(
        output / "results.json",
        {
            "machine": where,
            "perplexity_protocol": protocol,
            "rows": rows,
            "parity": {"dense": dense_export["parity"], "pruned": pruned_export["parity"]},
            "size_note": pruned_export["size"]["note"],
            "seconds": time.perf_counter() - start,
        },
    )


if __name__ == "__main__":
    typer.run(main)
