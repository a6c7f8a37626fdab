"""``compress export onnx``, ``compress run-onnx``, ``compress card`` and ``compress push``.

Thin commands: parse, call one library function (:mod:`exporters.onnx`, :mod:`cards.builder`,
:mod:`exporters.hub`), print a summary. Heavy imports happen inside the commands.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from compress.cli.base import new_app

export_app = new_app("Export a compressed model for other runtimes.")

FolderArg = Annotated[
    Path, typer.Argument(help="Model folder written by compress prune (or any saved model).")
]


class Quantization(str, Enum):
    int8 = "int8"
    int8_weights = "int8-weights"
    int4 = "int4"


class Runtime(str, Enum):
    optimum = "optimum"
    genai = "genai"


@export_app.callback()
def export() -> None:
    """Export a compressed model for other runtimes."""


@export_app.command("onnx")
def export_onnx(
    folder: FolderArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Export folder (default: DIR/onnx).")
    ] = None,
    with_past: Annotated[
        bool,
        typer.Option("--with-past/--no-past", help="Export past key/values (fast generation)."),
    ] = True,
    quantize: Annotated[
        Quantization | None,
        typer.Option(
            help="Also write model_int8.onnx and measure it: int8 = ORT dynamic quantization "
            "(weights and activations); int8-weights = 8-bit weights only (MatMulNBits); "
            "int4 = 4-bit weights only (MatMulNBits, model_int4.onnx, parity-checked)."
        ),
    ] = None,
    block_size: Annotated[int, typer.Option(help="int4: weights per quantization block.")] = 32,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="optimum: optimum-onnx export; genai: onnxruntime-genai's model builder "
            "(fp32, or int4 with --quantize int4; run with its generator)."
        ),
    ] = Runtime.optimum,
    genai_algo: Annotated[
        str, typer.Option(help="--runtime genai int4: default, rtn, k_quant or k_quant_mixed.")
    ] = "k_quant_mixed",
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset (default: optimum's for the architecture).")
    ] = None,
    eval_source: Annotated[
        str, typer.Option(help="Held-out text for the int8 perplexity change.")
    ] = "wikipedia",
    eval_windows: Annotated[int, typer.Option(help="Perplexity windows for --quantize.")] = 4,
    eval_seqlen: Annotated[int, typer.Option(help="Tokens per perplexity window.")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export folder.")] = False,
) -> None:
    """Export DIR to ONNX, then check it in ONNX Runtime against PyTorch.

    The check compares logits (max |difference| must be <= 1e-4 in fp32) and greedy tokens;
    a miss fails the command and is marked in export_report.json.
    """
    from exporters.onnx import OnnxExportConfig
    from exporters.onnx import export_onnx as run_export

    config = OnnxExportConfig(
        with_past=with_past,
        opset=opset,
        quantize=quantize.value if quantize else None,
        block_size=block_size,
        runtime=runtime.value,
        genai_algo=genai_algo,
        eval_source=eval_source,
        eval_windows=eval_windows,
        eval_seqlen=eval_seqlen,
    )
    target = output or folder / "onnx"
    report = run_export(folder, target, config, overwrite=overwrite)
    typer.echo(_export_summary(report, target))


def _export_summary(report: dict, target: Path) -> str:
    from exporters.summary import extra_lines, genai_lines

    if report.get("runtime") == "onnxruntime-genai":
        return "\n".join(genai_lines(report, target))
    parity = report["parity"]
    lines = [
        f"exported {report['task']} (opset {report['opset']}) to {target}",
        f"ORT vs PyTorch: max |logit diff| {parity['max_abs_logit_diff']:.2e} prompts, "
        f"{parity['max_abs_decode_logit_diff']:.2e} decoding (limit {parity['atol']:g}); "
        f"greedy tokens identical on {parity['prompts']} prompts",
        f"size: {report['size']['note']}",
    ]
    int8 = report.get("int8")
    if int8:
        lat, ppl = int8["latency"], int8["perplexity"]
        lines += [
            f"{int8['quantize']}: {int8['bytes']['int8'] / 2**20:.1f} MiB (fp32 {int8['bytes']['fp32'] / 2**20:.1f}"
            f" MiB); prompt {lat['int8']['prefill_ms']:.1f} ms (fp32 {lat['fp32']['prefill_ms']:.1f}"
            f" ms); {lat['int8']['tokens_per_second']:.1f} tokens/s (fp32 "
            f"{lat['fp32']['tokens_per_second']:.1f})",
            f"int8 perplexity on {ppl['dataset']} ({ppl['windows']} x {ppl['seqlen']} tokens): "
            f"{ppl['int8']:.2f} vs fp32 {ppl['fp32']:.2f} ({100 * ppl['relative_change']:+.2f}%)",
        ]
    return "\n".join(lines + extra_lines(report))


def run_onnx(
    folder: Annotated[Path, typer.Argument(help="Folder written by compress export onnx.")],
    prompt: Annotated[str, typer.Argument(help="Text to continue.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 50,
    int8: Annotated[bool, typer.Option(help="Use model_int8.onnx (from --quantize).")] = False,
    int4: Annotated[bool, typer.Option(help="Use model_int4.onnx (--quantize int4).")] = False,
) -> None:
    """Generate greedily with an exported model in ONNX Runtime (onnxruntime-genai's generator,
    tokens streamed as they come, for a folder built with --runtime genai)."""
    from exporters.genai import is_genai_folder, stream_text
    from exporters.onnx import generate_text

    if is_genai_folder(folder):
        for piece in stream_text(folder, prompt, max_new_tokens):
            typer.echo(piece, nl=False)
        typer.echo()
        return
    typer.echo(generate_text(folder, prompt, max_new_tokens, int8=int8, int4=int4))


def card(
    folder: FolderArg,
    check: Annotated[
        bool, typer.Option("--check", help="Validate README.md's metadata offline; write nothing.")
    ] = False,
    repo_id: Annotated[
        str | None, typer.Option(help="Hub repo the card will live in (for the snippets).")
    ] = None,
) -> None:
    """Write DIR/README.md, the model card, from report.json and the evaluation/export records."""
    from cards.builder import require_valid, write_card

    if check:
        require_valid(folder)
        typer.echo(f"{folder / 'README.md'}: metadata valid and matches the records")
        return
    path = write_card(folder, repo_id)
    require_valid(folder)
    typer.echo(f"wrote {path}; review it before pushing")


def push(
    folder: FolderArg,
    repo_id: Annotated[str, typer.Option(help="Hub repo id, NAME or USER/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to commit to (default: main).")
    ] = None,
    commit_message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
) -> None:
    """Upload DIR (model, tokenizer, card, report, ONNX export) to the Hub in one commit.

    The token comes from HF_TOKEN or the login cache (huggingface-cli login); HF_ENDPOINT
    selects another Hub endpoint.
    """
    from exporters.hub import push_folder

    url = push_folder(folder, repo_id, private, revision, commit_message)
    typer.echo(f"pushed {folder} to {repo_id}: {url}")


class BnbScheme(str, Enum):
    nf4 = "bnb-nf4"
    int8 = "bnb-int8"


@export_app.command("bnb")
def export_bnb(
    folder: FolderArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the quantized model.")],
    quantize: Annotated[
        BnbScheme,
        typer.Option(
            help="bitsandbytes scheme: bnb-nf4 (4-bit NormalFloat) or bnb-int8 (LLM.int8)."
        ),
    ] = BnbScheme.nf4,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    eval_dataset: Annotated[
        str, typer.Option(help="Held-out text for the perplexity before/after.")
    ] = "wikipedia",
    eval_seqlen: Annotated[int, typer.Option(help="Tokens per perplexity window.")] = 512,
    eval_windows: Annotated[int, typer.Option(help="Perplexity windows (0: all).")] = 40,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Quantize a pruned model folder with bitsandbytes for transformers; measure its perplexity."""
    from exporters.bnb import quantize_folder

    result = quantize_folder(
        folder,
        output,
        quantize.value,
        device,
        eval_dataset,
        eval_seqlen,
        eval_windows or None,
        overwrite,
    )
    ppl = result["perplexity"]
    before = "-" if ppl["before"] is None else f"{ppl['before']:.2f}"
    typer.echo(
        f"{result['scheme']}: {result['source_bytes'] / 2**20:.1f} MiB -> {result['bytes'] / 2**20:.1f} MiB; "
        f"perplexity {ppl['dataset']} ({ppl['windows']}x{ppl['seqlen']}) {before} -> {ppl['after']:.2f}"
    )
    typer.echo(f"wrote {output}")
