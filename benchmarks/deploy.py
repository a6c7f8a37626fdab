"""What does each deployment format of a pruned model cost on disk and on this CPU?

The embedded SmolLM2-135M-Instruct pruned with Wanda at 50 % unstructured and at 2:4 (few
calibration windows, ``--reconstruct lr``: no block reconstruction, to keep the run short); each pruned model in every
format, measured in one run on the same prompt and held-out windows:

- dense safetensors (PyTorch, as compress prune writes it);
- compressed-tensors (HOOK: exporters.compressed, written by another helper; "not available"
  until it is merged);
- ONNX fp32 (optimum-onnx, parity-checked, tied embedding stored once), ONNX int8 (dynamic) and
  ONNX int4 (MatMulNBits, blocks of 32), all through optimum's ORTModelForCausalLM;
- onnxruntime-genai int4 (its model builder, ``k_quant_mixed``: int4 with the LM head, tied
  embedding and most sensitive layers in int8; its runtime's key/value cache).

Columns: bytes on disk, load seconds, prompt (prefill) latency, greedy tokens/s, and perplexity
on the same held-out windows (exporters.quantize.window_perplexity for every row). Goals
(issue 14): onnxruntime-genai int4 >= 2x the tokens/s of ONNX fp32 (optimum) of the same
pruned model, perplexity within +10 % of ONNX fp32. Prints the load average before and after
(the machine is shared), a table, and writes ``results.json`` under ``--output``.

Run: ``.venv/bin/python benchmarks/deploy.py`` (needs the ``export`` extra; ~20 min here).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer

from compress.calibration import load_texts, tokenize_stream
from compress.cli.render import table
from compress.core.io import write_json_atomic
from compress.models import embedded_model_dir, load_model
from exporters.genai import GenaiLM
from exporters.onnx import OnnxExportConfig, export_onnx, load_ort
from exporters.onnx_files import INT4_FILE, INT8_FILE, MODEL_FILE, model_bytes
from exporters.quantize import eval_windows as held_out_windows
from exporters.quantize import quantize_int8, window_perplexity
from exporters.timing import machine, measure_latency

PATTERNS = {"50%": "unstructured", "2:4": "2:4"}


def prune(folder: Path, pattern: str, nsamples: int, seqlen: int) -> Path:
    from compress.app.prune import run_prune
    from compress.core.config import (
        CalibrationConfig,
        EvalConfig,
        PruneConfig,
        ReconstructConfig,
        Technique,
    )

    config = PruneConfig(
        pattern=pattern,
        reconstruct=ReconstructConfig(technique=Technique.lr),
        calibration=CalibrationConfig(nsamples=nsamples, seqlen=seqlen),
        evaluation=EvalConfig(enabled=False),
        device="cpu",
        output=str(folder),
        overwrite=True,
    )
    run_prune(config, log=lambda message: print(message, flush=True))
    return folder


class Measure:
    """The prompt, windows and timing settings every row is measured with."""

    def __init__(self, ids, windows, new_tokens: int, repeats: int, pad: int):
        self.ids, self.windows = ids, windows
        self.new_tokens, self.repeats, self.pad = new_tokens, repeats, pad

    def row(self, pruned: str, fmt: str, size: int, load: Callable[[], object]) -> dict:
        print(f"measuring {pruned} {fmt}", flush=True)
        start = time.perf_counter()
        model = load()
        load_seconds = time.perf_counter() - start
        latency = measure_latency(model, self.ids, self.new_tokens, self.pad, self.repeats)
        perplexity = window_perplexity(model, self.windows)
        del model
        gc.collect()
        return {
            "pruned": pruned,
            "format": fmt,
            "bytes": size,
            "load_seconds": load_seconds,
            **latency,
            "perplexity": perplexity,
        }


def compressed_tensors_row(pruned: str, folder: Path, work: Path, measure: Measure):
    """HOOK (lead): the compressed-tensors column, from exporters.compressed (another helper's
    module). Wire it here after merging: save ``folder`` as compressed-tensors under ``work``
    and return ``measure.row(pruned, "compressed-tensors", bytes, load)``."""
    try:
        from exporters import compressed
    except ImportError:
        print(f"{pruned} compressed-tensors: not available (exporters.compressed missing)")
        return None
    save = getattr(compressed, "deploy_row", None)
    if save is None:
        print(f"{pruned} compressed-tensors: not available (exporters.compressed not wired yet)")
        return None
    return save(pruned, folder, work, measure)


def variant_rows(pruned: str, folder: Path, work: Path, measure: Measure, seqlen: int) -> list:
    def torch_model():
        return load_model(str(folder), device="cpu", dtype="float32").model

    safetensors = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    rows = [measure.row(pruned, "dense safetensors (PyTorch)", safetensors, torch_model)]
    compressed = compressed_tensors_row(pruned, folder, work, measure)
    rows += [compressed] if compressed else []

    onnx_dir = work / "onnx"
    windows = int(measure.windows.shape[0])
    export_onnx(folder, onnx_dir, OnnxExportConfig(), overwrite=True)
    quantize_int8(onnx_dir, "int8")
    quantize_int8(onnx_dir, "int4", block_size=32)
    for fmt, file_name in (
        ("ONNX fp32 (optimum)", MODEL_FILE),
        ("ONNX int8 (dynamic)", INT8_FILE),
        ("ONNX int4 (MatMulNBits)", INT4_FILE),
    ):
        size = model_bytes(onnx_dir, file_name)
        rows.append(measure.row(pruned, fmt, size, lambda f=file_name: load_ort(onnx_dir, f)))

    genai_dir = work / "genai-int4"
    genai = OnnxExportConfig(
        runtime="genai", quantize="int4", eval_windows=windows, eval_seqlen=seqlen
    )
    export_onnx(folder, genai_dir, genai, overwrite=True)
    size = model_bytes(genai_dir)
    rows.append(measure.row(pruned, "onnxruntime-genai int4", size, lambda: GenaiLM(genai_dir)))
    return rows


def goals(rows: list[dict]) -> list[str]:
    """The issue's two goals, per pruned model: genai int4 speed and perplexity vs ONNX fp32."""
    lines = []
    for pruned in PATTERNS:
        by_format = {r["format"]: r for r in rows if r["pruned"] == pruned}
        fp32, genai = by_format["ONNX fp32 (optimum)"], by_format["onnxruntime-genai int4"]
        speed = genai["tokens_per_second"] / fp32["tokens_per_second"]
        ppl = genai["perplexity"] / fp32["perplexity"] - 1
        lines.append(
            f"{pruned}: onnxruntime-genai int4 {speed:.2f}x the tokens/s of ONNX fp32 "
            f"(goal >= 2: {'met' if speed >= 2 else 'missed'}); perplexity {100 * ppl:+.1f}% "
            f"(goal <= +10%: {'met' if ppl <= 0.10 else 'missed'})"
        )
    return lines


def main(
    output: Annotated[Path, typer.Option(help="Work folder and results.json.")] = Path(
        "out/bench/deploy"
    ),
    threads: Annotated[int, typer.Option(help="Intra-op threads for torch and ORT.")] = 2,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for the timings.")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens generated per timing.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (median).")] = 3,
    nsamples: Annotated[int, typer.Option(help="Calibration windows for Wanda.")] = 16,
    seqlen: Annotated[int, typer.Option(help="Tokens per calibration/eval window.")] = 256,
    eval_windows: Annotated[int, typer.Option(help="Perplexity windows.")] = 4,
) -> None:
    """Prune the embedded model two ways; measure every deployment format of each."""
    torch.set_num_threads(threads)
    start, load_before = time.perf_counter(), os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    tokenizer = load_model(str(embedded_model_dir())).tokenizer
    ids = tokenize_stream(tokenizer, load_texts("wikipedia", "test"))[:prompt_tokens][None]
    windows = held_out_windows(tokenizer, "wikipedia", eval_windows, seqlen)
    measure = Measure(ids, windows, new_tokens, repeats, tokenizer.eos_token_id)
    rows = []
    for pruned, pattern in PATTERNS.items():
        work = output / pattern.replace(":", "-")
        folder = prune(work / "pruned", pattern, nsamples, seqlen)
        rows += variant_rows(pruned, folder, work, measure, seqlen)
    header = ["pruned", "format", "MiB", "load s", "prompt ms", "tokens/s", "perplexity"]
    lines = [
        [r["pruned"], r["format"], r["bytes"] / 2**20, r["load_seconds"], r["prefill_ms"],
         r["tokens_per_second"], r["perplexity"]]
        for r in rows
    ]  # fmt: skip
    where = (
        f"{machine()}; {threads} threads; batch 1, {prompt_tokens}-token prompt, {new_tokens} "
        f"new tokens, medians of {repeats} runs; perplexity: first {eval_windows} "
        f"non-overlapping {seqlen}-token windows of the wikipedia test split"
    )
    load_after = os.getloadavg()
    summary = goals(rows)
    print(f"\n{table(header, lines)}\n{where}")
    print("\n".join(summary))
    print(f"load average before {load_before}, after {load_after}")
    seconds = time.perf_counter() - start
    print(f"total {seconds:.0f}s")
    write_json_atomic(
        output / "results.json",
        {
            "machine": where,
            "rows": rows,
            "goals": summary,
            "load_average": {"before": load_before, "after": load_after},
            "seconds": seconds,
        },
    )


if __name__ == "__main__":
    typer.run(main)
