"""Export a saved model folder to ONNX and prove, in ONNX Runtime, that it computes the same thing.

:class:`OnnxExporter` (``compress export onnx``) runs one of two routes into a staging folder:
optimum-onnx's exporter (:mod:`exporters.onnx.optimum`) or, with ``runtime="genai"``,
onnxruntime-genai's model builder (:mod:`exporters.onnx.genai_route`); each returns its
export_report.json (:func:`exporters.onnx.record.export_report`), written here; the folder is
then published and the model folder's report gets the ``onnx`` or ``onnx-genai`` record.

optimum's own validation only logs a tolerance miss as a warning and keeps the export; here a miss
raises :class:`ExportParityError` after marking the report, so a bad export never passes silently.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.core.errors import BadInputError, ExportParityError
from compress.core.io import check_target
from compress.core.report import REPORT_NAME, ArtifactRecord, record_artifact
from exporters.base import Exporter, register, run_export
from exporters.onnx.config import ExportOnnxConfig, OnnxExportConfig
from exporters.onnx.record import EXPORT_REPORT, onnx_artifact, write_export_report


@register
class OnnxExporter(Exporter):
    name = "onnx"
    config = ExportOnnxConfig
    doc = """Export DIR to ONNX, then check it in ONNX Runtime against PyTorch.

    The check compares logits (max |difference| must be <= 1e-4 in fp32) and greedy tokens;
    a miss fails the command and is marked in export_report.json.
    """
    formats = ("onnx", "onnx-genai")

    def target(self, config: ExportOnnxConfig) -> Path:
        return config.target  # default: DIR/onnx

    def check(self, source: Path, target: Path, config: ExportOnnxConfig) -> None:
        from compress.model.preflight import float32_weights, free_ram
        from exporters.onnx.exact import checkpoint_bytes
        from exporters.onnx.fit import check_fits

        _check_paths(source.resolve(), target.resolve(), config.overwrite)
        record = _check_record(source, config.onnx)
        config.onnx.require_runtime()
        route = config.onnx.route
        if record is not None and route == "genai":  # the record's integers: no float graph
            check_fits(route, "exact", checkpoint_bytes(source, record), free_ram())
        else:
            check_fits(route, config.onnx.quantize, float32_weights(source), free_ram())

    def export(self, source: Path, staging: Path, config: ExportOnnxConfig) -> ArtifactRecord:
        from exporters.onnx import genai_route, optimum

        source = source.resolve()
        genai = config.onnx.route == "genai"
        route = genai_route.build_and_check if genai else optimum.export_and_check
        report = route(source, staging, config.onnx)
        write_export_report(staging, report)
        return onnx_artifact(report, _relative_to(config.target.resolve(), source))

    def finish(
        self, source: Path, target: Path, record: ArtifactRecord, config: ExportOnnxConfig
    ) -> None:
        if (source / REPORT_NAME).is_file():  # the files with their bytes, for the card
            record_artifact(source, record)
        for parity in _parities(read_export_report(target)):
            if not parity["passed"]:
                raise ExportParityError(_parity_message(parity, target.resolve()))

    def summary(self, record: ArtifactRecord, config: ExportOnnxConfig) -> list[str]:
        from exporters.onnx.summary import summary_lines

        return summary_lines(read_export_report(config.target), config.target)

    def deployment_row(self, record: ArtifactRecord, repo: str) -> dict | None:
        return None  # the card renders an ONNX export from its export_report.json


def export_onnx(
    folder: Path, output: Path, config: OnnxExportConfig, overwrite: bool = False
) -> dict:
    """Export ``folder`` to ``output``, check it in ONNX Runtime, and return export_report.json.

    Raises:
        BadInputError: ``folder`` is not a model folder, or ``output`` exists (without overwrite).
        ExportParityError: ORT disagrees with PyTorch (``output`` is kept with a failed report),
            or onnxruntime-genai fails inside the check (nothing is written).
    """
    command = ExportOnnxConfig(
        folder=Path(folder), output=Path(output), onnx=config, overwrite=overwrite
    )
    run_export(OnnxExporter(), command)
    return read_export_report(output)


def read_export_report(output: Path) -> dict:
    return json.loads((Path(output) / EXPORT_REPORT).read_text())


def _parities(report: dict) -> list[dict]:
    """Every parity check the export ran: the float graph's, then the quantized graph's."""
    quantized = [report.get(tag, {}).get("parity") for tag in ("int8", "int4")]
    return [report["parity"], *(parity for parity in quantized if parity)]


def _check_record(folder: Path, config: OnnxExportConfig):
    """Refuse, before any work, a ``--quantize`` a quantized folder cannot be written with
    exactly (:func:`exporters.onnx.exact.check_record`); the record whose integers the export
    writes (None: it rounds nothing of a record)."""
    from compress.algorithms.quant.record import read_record
    from exporters.onnx.exact import check_record

    record = read_record(folder)
    if record is not None:
        check_record(record.grid, config.quantize, folder)
    elif config.quantize == "int8-weights" and config.route == "genai":
        raise BadInputError(
            "--runtime genai builds fp32 or int4 (int8-weights only from a folder quantized to "
            "int8): drop --quantize, use int4, or --runtime optimum"
        )
    return record if config.quantize is not None else None


def _check_paths(folder: Path, output: Path, overwrite: bool) -> None:
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} has no config.json: point to a saved model folder")
    if output == folder or folder.is_relative_to(output):
        raise BadInputError(f"--output {output} would replace the model folder; pick another path")
    check_target(output, overwrite)


def _relative_to(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def _parity_message(parity: dict, output: Path) -> str:
    tokens = "same greedy tokens" if parity["tokens_equal"] else "different greedy tokens"
    if parity.get("quantized"):
        worst, what = parity["mean_abs_logit_diff"], "int4 mean |logit diff|"
    else:
        worst = max(parity["max_abs_logit_diff"], parity["max_abs_decode_logit_diff"])
        what = "max |logit diff|"
    return (
        f"ONNX export disagrees with PyTorch: {what} {worst:.3g} "
        f"(limit {parity['atol']:g}), {tokens}; marked failed in {output / EXPORT_REPORT}"
    )
