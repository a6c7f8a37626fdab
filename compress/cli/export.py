"""``compress export onnx | bnb``, ``compress run-onnx``, ``compress card`` and ``compress push``.

Thin commands: each is built from its config in :mod:`compress.app.export`, runs that module's
workflow and prints a summary. Heavy imports happen inside the workflows.
"""

from __future__ import annotations

from pathlib import Path

import typer

from compress.app import export as workflows
from compress.app.compressed import CompressedExportConfig
from compress.cli.base import new_app
from compress.core.options import command

export_app = new_app("Export a compressed model for other runtimes.")


@export_app.callback()
def export() -> None:
    """Export a compressed model for other runtimes."""


def _export_onnx(config: workflows.ExportOnnxConfig) -> None:
    report = workflows.export_onnx(config)
    typer.echo(_export_summary(report, config.target))


def _export_summary(report: dict, target: Path) -> str:
    from exporters.onnx.summary import extra_lines, genai_lines

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


def _export_bnb(config: workflows.ExportBnbConfig) -> None:
    from compress.core.report import perplexity_label

    result = workflows.export_bnb(config)
    ppl, source_bytes = result["perplexity"], result["details"]["source_bytes"]
    before = "-" if ppl["before"] is None else f"{ppl['before']:.2f}"
    typer.echo(
        f"{result['format']}: {source_bytes / 2**20:.1f} MiB -> {result['bytes'] / 2**20:.1f} MiB; "
        f"perplexity {perplexity_label(ppl)} {before} -> {ppl['after']:.2f}"
    )
    typer.echo(f"wrote {config.output}")


def _run_onnx(config: workflows.RunOnnxConfig) -> None:
    for piece in workflows.run_onnx(config):
        typer.echo(piece, nl=False)
    typer.echo()


def _card(config: workflows.CardConfig) -> None:
    path = workflows.card(config)
    if config.check:
        typer.echo(f"{path}: reads as the records render it; metadata valid")
    else:
        typer.echo(f"wrote {path}; review it before pushing")


def _push(config: workflows.PushConfig) -> None:
    url = workflows.push(config)
    typer.echo(f"pushed {config.folder} to {config.repo_id}: {url}")


export_app.command("onnx")(
    command(
        workflows.ExportOnnxConfig,
        _export_onnx,
        """Export DIR to ONNX, then check it in ONNX Runtime against PyTorch.

    The check compares logits (max |difference| must be <= 1e-4 in fp32) and greedy tokens;
    a miss fails the command and is marked in export_report.json.
    """,
        name="export_onnx",
    )
)
export_app.command("bnb")(
    command(
        workflows.ExportBnbConfig,
        _export_bnb,
        "Quantize a pruned model folder with bitsandbytes for transformers; measure its perplexity.",
        name="export_bnb",
    )
)
run_onnx = command(
    workflows.RunOnnxConfig,
    _run_onnx,
    "Generate greedily with an exported model in ONNX Runtime.",
    name="run_onnx",
)
card = command(
    workflows.CardConfig,
    _card,
    "Write DIR/README.md, the model card, from report.json and the evaluation/export records.",
    name="card",
)
push = command(
    workflows.PushConfig,
    _push,
    """Upload DIR (model, tokenizer, card, report, ONNX export) to the Hub in one commit.

    The token comes from HF_TOKEN or the login cache (huggingface-cli login); HF_ENDPOINT
    selects another Hub endpoint.
    """,
    name="push",
)


def _export_compressed(config: CompressedExportConfig) -> None:
    """Rewrite a pruned folder in the compressed-tensors format (sparse-24-bitmask for 2:4,
    sparse-bitmask otherwise); it is read back bit-identical before it is published."""
    from compress.app.compressed import run_export_compressed

    record = run_export_compressed(config)
    typer.echo(
        f"{record['format']}: {record['bytes'] / 2**20:.1f} MiB (dense {record['dense_bytes'] / 2**20:.1f}"
        f" MiB, {record['ratio']:.3f}x); pruned Linears {record['linear_ratio']:.3f}x; "
        f"{record['round_trip']}"
    )
    typer.echo(f"wrote {config.output}")


export_app.command("compressed")(
    command(
        CompressedExportConfig,
        _export_compressed,
        _export_compressed.__doc__ or "",
        name="compressed",
    )
)
