"""What does each deployment format of a pruned model cost on disk and on this CPU?

The embedded SmolLM2-135M-Instruct pruned with Wanda (or ``--method sparsegpt``) at 50 %
unstructured and at 2:4 (few calibration windows, ``--reconstruct lr``: no block reconstruction,
to keep the run short); each pruned model in every format, measured in one run on the same prompt and held-out windows:

- dense safetensors (PyTorch, as compress prune writes it);
- compressed-tensors (``exporters.compressed``: sparse-bitmask for 50 %, sparse-24-bitmask for
  2:4), loaded as a user would (see ``COMPRESSED_NOTE``);
- ONNX fp32 (optimum-onnx, parity-checked, tied embedding stored once), ONNX int8 (dynamic) and
  ONNX int4 (MatMulNBits, blocks of 32), all through optimum's ORTModelForCausalLM;
- onnxruntime-genai int4 (its model builder with ``OnnxExportConfig``'s defaults; its runtime's
  key/value cache; as many threads as the others).

Columns: bytes on disk, load seconds, prompt (prefill) latency, greedy tokens/s, and perplexity
on the same held-out windows (exporters.onnx.quantize.window_perplexity for every row). Goals:
compressed-tensors pruned Linears <= 0.55x and the whole folder <= 0.65x the dense
bytes; onnxruntime-genai int4 >= 2x the tokens/s of ONNX fp32 (optimum) of the same pruned
model, perplexity within +10 % of ONNX fp32. The speed goal is judged on a second timing that
alternates the two models round by round (``--rounds``), so that load from other processes hits
both alike. Prints the load average before and after (the machine may be shared), a table, the
goals, and writes ``results.json`` under ``--output``.

Run: ``.venv/bin/python benchmarks/deploy.py`` (needs the ``export`` extra; ~20 min on 2 cores).
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer

from compress.cli.render import table
from compress.core.io import write_json_atomic
from compress.data.calibration import load_texts, tokenize_stream
from compress.model.loading import embedded_model_dir, load_model
from exporters.onnx import OnnxExportConfig, export_onnx, load_ort
from exporters.onnx.files import INT4_FILE, INT8_FILE, MODEL_FILE, model_bytes
from exporters.onnx.genai import GenaiLM
from exporters.onnx.quantize import eval_windows as held_out_windows
from exporters.onnx.quantize import quantize_int8, window_perplexity
from exporters.onnx.timing import generation, machine, measure_latency

sys.path.insert(0, str(Path(__file__).parent))
from common import prune_lr  # noqa: E402

PATTERNS = {"50%": "unstructured", "2:4": "2:4"}
DENSE, FP32, GENAI = "dense safetensors (PyTorch)", "ONNX fp32 (optimum)", "onnxruntime-genai int4"
LINEAR_GOAL, FOLDER_GOAL = 0.55, 0.65  # compressed-tensors bytes over dense
SPEED_GOAL, PPL_GOAL = 2.0, 0.10  # genai int4 over ONNX fp32: tokens/s at least, ppl at most
COMPRESSED_NOTE = (
    "compressed-tensors rows: the folder compress export compressed writes (MiB: its safetensors "
    "files), loaded as a user would: sparse-24-bitmask with transformers' "
    "AutoModelForCausalLM.from_pretrained (decompressed on load); sparse-bitmask with "
    "compressed-tensors' ModelCompressor.decompress into the architecture of config.json, since "
    "transformers 4.57's from_pretrained cannot load it. Both give back the dense PyTorch model: "
    "its speed and perplexity, from a smaller file."
)


class Measure:
    """The prompt, windows and timing settings every row is measured with."""

    def __init__(self, ids, windows, new_tokens: int, repeats: int, pad: int, rounds: int):
        self.ids, self.windows = ids, windows
        self.new_tokens, self.repeats, self.pad = new_tokens, repeats, pad
        self.rounds = rounds

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

    def alternated(self, loads: dict[str, Callable[[], object]]) -> dict:
        """Greedy tokens/s of several models loaded side by side, their runs alternated round
        by round, so that a load spike on a shared machine slows all of them, not one row.

        Each round times ``generate`` of one token and of ``new_tokens``: ``end_to_end`` is
        new tokens over the whole call (prompt included, as the table's column); ``decode`` is
        the ``new_tokens - 1`` steps after the first over their own time (the difference)."""
        models = {name: load() for name, load in loads.items()}
        calls = {
            (name, tokens): generation(model, self.ids, tokens, self.pad)
            for name, model in models.items()
            for tokens in (1, self.new_tokens)
        }
        seconds: dict[tuple, list[float]] = {key: [] for key in calls}
        for call in calls.values():
            call()  # warm-up
        for _ in range(self.rounds):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[key].append(time.perf_counter() - start)
        del models, calls
        gc.collect()
        median = {key: statistics.median(times) for key, times in seconds.items()}
        steps = max(self.new_tokens - 1, 1)
        return {
            "rounds": self.rounds,
            "seconds": {f"{name} x{tokens}": times for (name, tokens), times in seconds.items()},
            "end_to_end": {n: self.new_tokens / median[n, self.new_tokens] for n in loads},
            "decode": {n: steps / (median[n, self.new_tokens] - median[n, 1]) for n in loads},
        }


def compressed_tensors_row(pruned: str, folder: Path, work: Path, measure: Measure) -> dict:
    """The pruned folder rewritten as compressed-tensors (exporters.compressed), loaded the way a
    user would: transformers' ``from_pretrained`` for ``sparse-24-bitmask``; for
    ``sparse-bitmask``, which transformers 4.57 cannot load, compressed-tensors' own
    ``ModelCompressor.decompress``. Both give the dense model back, so it runs as PyTorch does."""
    from exporters.compressed import SPARSE_24, load_compressed, write_compressed

    target = work / "compressed"
    record = write_compressed(folder, target, overwrite=True)
    fmt = record["format"].removeprefix("compressed-tensors ")
    how = "from_pretrained" if fmt == SPARSE_24 else "ModelCompressor"
    row = measure.row(
        pruned,
        f"compressed-tensors {fmt} ({how})",
        safetensors_bytes(target),
        lambda: load_compressed(target),  # the saved dtype: float32, as the dense row
    )
    keys = ("ratio", "linear_ratio", "bytes", "dense_bytes", "linear_bytes", "dense_linear_bytes")
    measured = {"bytes": record["bytes"], **record["details"]}
    return {**row, "compressed": {key: measured[key] for key in keys}}


def safetensors_bytes(folder: Path) -> int:
    """Bytes of the weight files (what the dense and compressed rows compare)."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def variant_rows(
    pruned: str, folder: Path, work: Path, measure: Measure, seqlen: int
) -> tuple[list[dict], dict]:
    """Every format's row for one pruned model, and the alternated genai vs fp32 timing."""

    def torch_model():
        return load_model(str(folder), device="cpu", dtype="float32").model

    dense = measure.row(pruned, DENSE, safetensors_bytes(folder), torch_model)
    rows = [dense, compressed_tensors_row(pruned, folder, work, measure)]

    onnx_dir = work / "onnx"
    windows = int(measure.windows.shape[0])
    export_onnx(folder, onnx_dir, OnnxExportConfig(), overwrite=True)
    quantize_int8(onnx_dir, "int8")
    quantize_int8(onnx_dir, "int4", block_size=OnnxExportConfig().block_size)
    for fmt, file_name in (
        (FP32, MODEL_FILE),
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
    rows.append(measure.row(pruned, GENAI, size, lambda: GenaiLM(genai_dir)))
    loads = {FP32: lambda: load_ort(onnx_dir, MODEL_FILE), GENAI: lambda: GenaiLM(genai_dir)}
    return rows, {"pruned": pruned, **measure.alternated(loads)}


def goals(rows: list[dict], pairs: list[dict]) -> list[str]:
    """The issue's goals, per pruned model: compressed-tensors bytes against dense; genai int4
    speed (from the alternated timings) and perplexity against ONNX fp32."""
    lines = []
    for pair in pairs:
        pruned = pair["pruned"]
        by_format = {r["format"]: r for r in rows if r["pruned"] == pruned}
        packed = next(r["compressed"] for r in by_format.values() if "compressed" in r)
        linear, whole = packed["linear_ratio"], packed["ratio"]
        speed, ratio = (pair[kind][GENAI] / pair[kind][FP32] for kind in ("decode", "end_to_end"))
        ppl = by_format[GENAI]["perplexity"] / by_format[FP32]["perplexity"] - 1
        lines += [
            f"{pruned}: compressed-tensors pruned Linears {linear:.3f}x dense (goal <= "
            f"{LINEAR_GOAL}: {_verdict(linear <= LINEAR_GOAL)}), whole folder {whole:.3f}x "
            f"(goal <= {FOLDER_GOAL}: {_verdict(whole <= FOLDER_GOAL)})",
            f"{pruned}: onnxruntime-genai int4 generates {speed:.2f}x the tokens/s of ONNX fp32 "
            f"(decode steps; {ratio:.2f}x end to end with the prompt), timed alternately over "
            f"{pair['rounds']} rounds (goal >= {SPEED_GOAL:g}: {_verdict(speed >= SPEED_GOAL)}); "
            f"perplexity {100 * ppl:+.1f}% (goal <= +{100 * PPL_GOAL:.0f}%: "
            f"{_verdict(ppl <= PPL_GOAL)})",
        ]
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def main(
    output: Annotated[Path, typer.Option(help="Work folder and results.json.")] = Path(
        "out/bench/deploy"
    ),
    threads: Annotated[int, typer.Option(help="Intra-op threads for torch and ORT.")] = 2,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for the timings.")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens generated per timing.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (median).")] = 3,
    method: Annotated[str, typer.Option(help="Pruning method: wanda or sparsegpt.")] = "wanda",
    nsamples: Annotated[int, typer.Option(help="Calibration windows for the pruner.")] = 16,
    seqlen: Annotated[int, typer.Option(help="Tokens per calibration/eval window.")] = 256,
    eval_windows: Annotated[int, typer.Option(help="Perplexity windows.")] = 4,
    rounds: Annotated[
        int, typer.Option(help="Alternated generate runs of ONNX fp32 and genai int4 (goal).")
    ] = 5,
    reuse_pruned: Annotated[
        bool, typer.Option(help="Keep OUTPUT/*/pruned from an earlier run (skip pruning).")
    ] = False,
) -> None:
    """Prune the embedded model two ways; measure every deployment format of each."""
    torch.set_num_threads(threads)
    start, load_before = time.perf_counter(), os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    tokenizer = load_model(str(embedded_model_dir())).tokenizer
    ids = tokenize_stream(tokenizer, load_texts("wikipedia", "test"))[:prompt_tokens][None]
    windows = held_out_windows(tokenizer, "wikipedia", eval_windows, seqlen)
    measure = Measure(ids, windows, new_tokens, repeats, tokenizer.eos_token_id, rounds)
    rows, pairs = [], []
    for pruned, pattern in PATTERNS.items():
        work = output / pattern.replace(":", "-")
        folder = work / "pruned"
        if not (reuse_pruned and (folder / "report.json").is_file()):
            prune_lr(folder, method, pattern, nsamples, seqlen, "cpu")
        measured, pair = variant_rows(pruned, folder, work, measure, seqlen)
        rows, pairs = rows + measured, pairs + [pair]
    header = ["pruned", "format", "MiB", "load s", "prompt ms", "tokens/s", "perplexity"]
    lines = [
        [r["pruned"], r["format"], r["bytes"] / 2**20, r["load_seconds"], r["prefill_ms"],
         r["tokens_per_second"], r["perplexity"]]
        for r in rows
    ]  # fmt: skip
    where = (
        f"{method}; {machine()}; {threads} threads; batch 1, {prompt_tokens}-token prompt, {new_tokens} "
        f"new tokens, medians of {repeats} runs; perplexity: first {eval_windows} "
        f"non-overlapping {seqlen}-token windows of the wikipedia test split"
    )
    load_after = os.getloadavg()
    summary = goals(rows, pairs)
    print(f"\n{table(header, lines)}\n{where}\n{COMPRESSED_NOTE}")
    print("\n".join(summary))
    print(f"load average before {load_before}, after {load_after}")
    seconds = time.perf_counter() - start
    print(f"total {seconds:.0f}s")
    write_json_atomic(
        output / "results.json",
        {
            "machine": where,
            "rows": rows,
            "note": COMPRESSED_NOTE,
            "alternated": pairs,
            "goals": summary,
            "load_average": {"before": load_before, "after": load_after},
            "seconds": seconds,
        },
    )


if __name__ == "__main__":
    typer.run(main)
