"""Summary lines of an ONNX export for the CLI: the float graph's check and size, the int8 and
int4 graphs, the tied embedding, and onnxruntime-genai builds."""

from __future__ import annotations

from pathlib import Path


def _parity_line(parity: dict, what: str) -> str:
    tokens = "identical" if parity["tokens_equal"] else f"differ on {len(parity['mismatches'])}"
    limit = (
        f"mean limit {parity['atol']:g}" if parity.get("quantized") else f"limit {parity['atol']:g}"
    )
    return (
        f"{what} vs PyTorch: mean |logit diff| {parity['mean_abs_logit_diff']:.2e}, max "
        f"{parity['max_abs_logit_diff']:.2e} prompts, {parity['max_abs_decode_logit_diff']:.2e} "
        f"decoding ({limit}); greedy tokens {tokens} of {parity['prompts']} prompts"
    )


def extra_lines(report: dict) -> list[str]:
    """The tied embedding's saving and the int4 graph of an optimum export, where there are."""
    return _tied_lines(report.get("tied_embedding")) + _int4_lines(report.get("int4"))


def _tied_lines(tied: dict | None) -> list[str]:
    if not tied or not tied["shared"]:
        return []
    return [
        f"tied embedding and LM head stored once: {tied['bytes_before'] / 2**20:.1f} MiB -> "
        f"{tied['bytes_after'] / 2**20:.1f} MiB"
    ]


def _int4_lines(int4: dict | None) -> list[str]:
    """Size, speed, perplexity and parity of ``model_int4.onnx``."""
    if not int4:
        return []
    lat, ppl, size = int4["latency"], int4["perplexity"], int4["bytes"]
    return [
        f"int4 (blocks of {int4['block_size']}): {size['int4'] / 2**20:.1f} MiB (fp32 "
        f"{size['fp32'] / 2**20:.1f} MiB); prompt {lat['int4']['prefill_ms']:.1f} ms (fp32 "
        f"{lat['fp32']['prefill_ms']:.1f} ms); {lat['int4']['tokens_per_second']:.1f} tokens/s "
        f"(fp32 {lat['fp32']['tokens_per_second']:.1f})",
        f"int4 perplexity on {ppl['dataset']} ({ppl['windows']} x {ppl['seqlen']} tokens): "
        f"{ppl['int4']:.2f} vs fp32 {ppl['fp32']:.2f} ({100 * ppl['relative_change']:+.2f}%)",
        *(_exact_lines(int4, "int4") or [_parity_line(int4["parity"], "int4")]),
    ]


def summary_lines(report: dict, target: Path) -> list[str]:
    """What ``compress export onnx`` prints about the export at ``target`` (``report``: its
    export_report.json)."""
    if report.get("runtime") == "onnxruntime-genai":
        return genai_lines(report, target)
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
            *_exact_lines(int8, "int8"),
        ]
    return lines + extra_lines(report)


def _exact_lines(graph: dict, tag: str) -> list[str]:
    """A quantized folder's graph: where its integers came from, and its parity."""
    if "exact" not in graph["method"]:
        return []
    return [f"{tag} weights: {graph['method']}", _parity_line(graph["parity"], tag)]


def genai_lines(report: dict, target: Path) -> list[str]:
    """What an onnxruntime-genai build holds and how it compares with PyTorch."""
    eight_bit = report.get("int8_projections")
    algorithm = report["algorithm"]
    if algorithm and eight_bit:
        algorithm += f" (8-bit {', '.join(eight_bit)})"
    lines = [
        f"built {report['precision']}{' ' + algorithm if algorithm else ''} "
        f"for onnxruntime-genai ({report['execution_provider']}) "
        f"to {target}: {report['files']['model.onnx'] / 2**20:.1f} MiB",
        _parity_line(report["parity"], "onnxruntime-genai"),
        *([f"{report['precision']} weights: {report['method']}"] if report.get("method") else []),
    ]
    ppl = report.get("perplexity")
    if ppl:
        lines.append(
            f"perplexity on {ppl['dataset']} ({ppl['windows']} x {ppl['seqlen']} tokens): "
            f"{ppl[report['precision']]:.2f} vs PyTorch fp32 {ppl['pytorch_fp32']:.2f} "
            f"({100 * ppl['relative_change']:+.2f}%)"
        )
    return lines
