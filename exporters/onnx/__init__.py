"""ONNX export checked in ONNX Runtime against PyTorch: optimum-onnx's exporter, or
onnxruntime-genai's model builder (``--runtime genai``).

:mod:`exporters.onnx.export` runs an export; :mod:`exporters.onnx.parity`, ``quantize``,
``tied``, ``timing`` and ``files`` are its parts; :mod:`exporters.onnx.genai` the
onnxruntime-genai runtime (:mod:`exporters.onnx.builder` runs its model builder).
"""

from exporters.onnx.export import (
    EXPORT_REPORT,
    QUANTIZATIONS,
    OnnxExportConfig,
    Quantization,
    export_onnx,
    generate_text,
    load_ort,
    onnx_artifact,
    optimum_installed,
    require_optimum,
)

__all__ = [
    "EXPORT_REPORT",
    "QUANTIZATIONS",
    "OnnxExportConfig",
    "Quantization",
    "export_onnx",
    "generate_text",
    "load_ort",
    "onnx_artifact",
    "optimum_installed",
    "require_optimum",
]
