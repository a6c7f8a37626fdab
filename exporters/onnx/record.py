"""What an ONNX export records: ``export_report.json`` (one builder for both routes, its
perplexity measured on the shared protocol; :class:`OnnxExportReport` its schema, checked where it
is written) and the model folder's ``artifacts`` record."""

# no ``from __future__ import annotations``: TypedDict reads NotRequired only from real types
from dataclasses import asdict
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from compress.core.io import write_json_atomic
from compress.core.report import (
    ArtifactRecord,
    PerplexitySection,
    ReportSchemaError,
    artifact_record,
    check_value,
    now_iso,
    package_versions,
    perplexity_protocol,
)
from exporters.onnx.config import OnnxExportConfig
from exporters.onnx.files import quantized_file

EXPORT_REPORT = "export_report.json"
EXPORT_FORMAT = "compress.export/1"


class QuantizedGraph(TypedDict):
    """The optimum route's quantized graph (``int8`` or ``int4``), measured against the float one."""

    quantize: str
    method: str
    file: str
    bytes: dict[str, int]
    size_ratio: float
    machine: str
    latency: dict[str, Any]
    perplexity: dict[str, Any]
    block_size: NotRequired[int]  # int4, or a quantized folder's graph
    parity: NotRequired[dict[str, Any]]  # int4, or a quantized folder's graph


class OnnxExportReport(TypedDict):
    """``export_report.json``: the keys both routes write, then each route's own."""

    format: str
    source: str
    config: dict[str, Any]  # OnnxExportConfig's fields
    files: dict[str, int]
    parity: dict[str, Any]
    size: dict[str, Any]
    versions: dict[str, str]
    created: str
    # optimum-onnx
    task: NotRequired[str]
    dtype: NotRequired[str]
    opset: NotRequired[int]
    tied_embedding: NotRequired[Any]
    int8: NotRequired[QuantizedGraph]
    int4: NotRequired[QuantizedGraph]
    # onnxruntime-genai
    runtime: NotRequired[str]
    precision: NotRequired[str]
    algorithm: NotRequired[str | None]
    int8_projections: NotRequired[list[str]]
    int8_matmuls: NotRequired[dict[str, Any]]
    method: NotRequired[str]  # a quantized folder's build: its integers, from the record
    block_size: NotRequired[int]  # its group size
    execution_provider: NotRequired[str]
    perplexity: NotRequired[dict[str, Any]]


def check_export_report(report: dict) -> list[str]:
    """Where ``report`` departs from :class:`OnnxExportReport`, each as ``path: problem``."""
    return check_value(report, OnnxExportReport, EXPORT_REPORT)


def write_export_report(folder: Path, report: dict) -> None:
    """Save ``folder/export_report.json`` once it conforms to :class:`OnnxExportReport`.

    Raises:
        ReportSchemaError: a key is missing, unknown or mistyped (a bug).
    """
    problems = check_export_report(report)
    if problems:
        raise ReportSchemaError("export report outside its schema: " + "; ".join(problems))
    write_json_atomic(Path(folder) / EXPORT_REPORT, report)


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
        before, after = ("pytorch_fp32", report["precision"]) if genai else ("fp32", tag)
        windows, seqlen = measured["windows"], measured["seqlen"]
        tokens = measured.get("tokens", windows * seqlen)
        protocol = perplexity_protocol(
            measured["dataset"], measured["split"], seqlen, windows, tokens
        )
        perplexity = {**protocol, "before": measured[before], "after": measured[after]}
    if genai:
        keys = ("precision", "algorithm", "execution_provider")
        details = {key: report[key] for key in keys} | _method(report.get("method"))
    else:
        details = {key: report[key] for key in ("task", "opset", "dtype")} | {"quantized": tag}
        details |= _method(tag and report[tag]["method"])
    return artifact_record(
        format="onnx-genai" if genai else "onnx",
        path=path,
        files=report["files"],
        parity=report["parity"],
        perplexity=perplexity,
        load=_load_snippets(genai, path, tag and quantized_file(tag)),
        details={**details, "report": EXPORT_REPORT},
    )


def _method(method: str | None) -> dict:
    """How the quantized weights were made, where they were: ORT's rounding or the record's."""
    return {"method": method} if method else {}


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
