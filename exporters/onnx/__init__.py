"""ONNX export checked in ONNX Runtime against PyTorch: optimum-onnx's exporter, or
onnxruntime-genai's model builder (``--runtime genai``).

- :mod:`~exporters.onnx.config`: the options (:class:`ExportOnnxConfig`, :class:`OnnxExportConfig`)
  and the route they select;
- :mod:`~exporters.onnx.export`: :class:`OnnxExporter`, the registered exporter, and
  :func:`export_onnx`;
- :mod:`~exporters.onnx.optimum` and :mod:`~exporters.onnx.genai_route`: the two routes, each
  returning export_report.json built by :mod:`~exporters.onnx.record`;
- :mod:`~exporters.onnx.fit`: the RAM each route needs, checked before the work;
- their parts: ``parity``, ``quantize``, ``tied``, ``timing``, ``files``, ``context``,
  ``summary``; ``genai`` (the onnxruntime-genai runtime), ``builder`` and ``genai_quant`` (its
  model builder).
"""

from exporters.onnx.config import (
    QUANTIZATIONS,
    ExportOnnxConfig,
    OnnxExportConfig,
    Quantization,
    optimum_installed,
    require_optimum,
)
from exporters.onnx.export import OnnxExporter, export_onnx
from exporters.onnx.optimum import generate_text, load_ort
from exporters.onnx.record import EXPORT_REPORT, onnx_artifact

__all__ = [
    "EXPORT_REPORT",
    "QUANTIZATIONS",
    "ExportOnnxConfig",
    "OnnxExportConfig",
    "OnnxExporter",
    "Quantization",
    "export_onnx",
    "generate_text",
    "load_ort",
    "onnx_artifact",
    "optimum_installed",
    "require_optimum",
]
