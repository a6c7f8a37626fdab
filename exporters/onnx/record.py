"""What an ONNX export records: ``export_report.json`` (one builder for both routes, its
perplexity measured on the shared protocol) and the model folder's ``artifacts`` record."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from compress.core.report import (
    ArtifactRecord,
    PerplexitySection,
    artifact_record,
    now_iso,
    package_versions,
    perplexity_protocol,
)
from exporters.onnx.config import OnnxExportConfig
from exporters.onnx.files import quantized_file

EXPORT_REPORT = "export_report.json"
EXPORT_FORMAT = "compress.export/1"


def export_report(folder: Path, config: OnnxExportConfig, **fields: object) -> dict:
    """export_report.json of an export of ``folder`` by either route: what was exported from,
    with what options, the route's ``fields`` (files, parity, size, ...), package versions and
    the time."""
    return {
        "format": EXPORT_FORMAT,
        "source": str(folder),
        "config": asdict(config),
        **fields,
        "versions": package_versions(),
        "created": now_iso(),
    }


def measured_perplexity(config: OnnxExportConfig, ids, /, **values: object) -> dict:
    """Perplexities measured on the held-out windows ``ids`` (``(count, seqlen)`` token ids) of
    ``config.eval_source``'s test split, under the shared protocol's keys, beside ``values``."""
    count, seqlen = ids.shape
    protocol = perplexity_protocol(
        config.eval_source, "test", int(seqlen), int(count), int(ids.numel())
    )
    return {**protocol, **values}


def onnx_artifact(report: dict, path: str) -> ArtifactRecord:
    """The model folder's ``artifacts`` record of an export (``report``: its export_report.json,
    which keeps the rest) at ``path``: ``onnx`` (optimum-onnx, with its quantized graph when
    made) or ``onnx-genai``. Its perplexity is the quantized graph's against the float one's
    (optimum) or PyTorch's (genai int4); its parity the float graph's (genai: the build's)."""
    genai = report.get("runtime") == "onnxruntime-genai"
    tag = next((t for t in ("int8", "int4") if report.get(t)), None)
    measured = report.get("perplexity") if genai else tag and report[tag]["perplexity"]
    perplexity: PerplexitySection | None = None
    if measured:
        before, after = ("pytorch_fp32", "int4") if genai else ("fp32", tag)
        windows, seqlen = measured["windows"], measured["seqlen"]
        tokens = measured.get("tokens", windows * seqlen)
        protocol = perplexity_protocol(
            measured["dataset"], measured["split"], seqlen, windows, tokens
        )
        perplexity = {**protocol, "before": measured[before], "after": measured[after]}
    if genai:
        keys = ("precision", "algorithm", "execution_provider")
        details = {key: report[key] for key in keys}
    else:
        details = {key: report[key] for key in ("task", "opset", "dtype")} | {"quantized": tag}
    return artifact_record(
        format="onnx-genai" if genai else "onnx",
        path=path,
        files=report["files"],
        parity=report["parity"],
        perplexity=perplexity,
        load=_load_snippets(genai, path, tag and quantized_file(tag)),
        details={**details, "report": EXPORT_REPORT},
    )


def _load_snippets(genai: bool, path: str, quantized: str | None) -> list[dict]:
    """How to load an export at ``path`` (``{REPO}``: the repo id or folder it lies in)."""
    if genai:
        code = f'import onnxruntime_genai as og\n\nmodel = og.Model("{path}")  # a local copy'
        return [{"runtime": "onnxruntime-genai", "code": code}]
    where = f'"{path}"' if Path(path).is_absolute() else f'"{{REPO}}", subfolder="{path}"'
    head = "from optimum.onnxruntime import ORTModelForCausalLM\n\n"
    snippets = [
        {
            "runtime": "ONNX Runtime through optimum-onnx",
            "code": f"{head}model = ORTModelForCausalLM.from_pretrained({where})",
        }
    ]
    if quantized:
        code = (
            f'{head}model = ORTModelForCausalLM.from_pretrained({where}, file_name="{quantized}")'
        )
        snippets.append({"runtime": f"ONNX Runtime, {quantized}", "code": code})
    return snippets
