"""What an ONNX export holds on disk: file sizes, opset, and how many weights are zero.

The zero count is what makes the size note honest: an unstructured-sparse model exports to a dense
ONNX file, every zero stored as a full float, so the file is as large as the dense model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
INT4_FILE = "model_int4.onnx"
FLOAT_TYPES = (1, 10, 16, 11)  # onnx.TensorProto FLOAT, FLOAT16, BFLOAT16, DOUBLE


def label(method: str) -> str:
    """The report key and file tag of a quantization method: int4, or int8 for the others."""
    return "int4" if method == "int4" else "int8"


def quantized_file(tag: str) -> str:
    """The graph file of a quantized export: ``int8`` or ``int4``."""
    return INT4_FILE if tag == "int4" else INT8_FILE


def model_files(folder: Path, file_name: str = MODEL_FILE) -> list[Path]:
    """The graph file and its external-data files (``model.onnx_data`` and the like)."""
    stem = Path(file_name).stem
    prefixes = (f"{stem}.onnx_data", f"{stem}.onnx.data")
    return sorted(
        p for p in Path(folder).iterdir() if p.name == file_name or p.name.startswith(prefixes)
    )


def model_bytes(folder: Path, file_name: str = MODEL_FILE) -> int:
    """Bytes on disk of one exported model, external data included."""
    return sum(p.stat().st_size for p in model_files(folder, file_name))


def opset(path: Path) -> int:
    """The default-domain opset the graph was exported with."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))


def has_past(path: Path) -> bool:
    """Whether the graph takes past key/values (exported ``with-past``)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(i.name.startswith("past_key_values") for i in graph.input)


def weight_zeros(path: Path) -> dict:
    """Zeros among the floating-point matrices (initializers with >= 2 dims) of an ONNX graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    zeros = numel = 0
    for init in graph.initializer:
        if len(init.dims) < 2 or init.data_type not in FLOAT_TYPES:
            continue
        values = numpy_helper.to_array(init)
        zeros += int(np.count_nonzero(values == 0))
        numel += int(values.size)
    return {
        "weight_elements": numel,
        "zero_elements": zeros,
        "zero_fraction": zeros / max(numel, 1),
    }


def size_note(fp32_bytes: int, zeros: dict) -> str:
    """One honest sentence about what the zeros do to the file size, from measured figures."""
    return (
        f"{zeros['zero_fraction']:.1%} of the {zeros['weight_elements']:,} exported weight elements "
        f"are zero, yet ONNX stores every one of them as a dense float: the fp32 export is "
        f"{fp32_bytes / 2**20:.1f} MiB. Unstructured zeros shrink neither the file nor ONNX "
        "Runtime's memory and do not speed up its dense kernels; quantization does shrink it."
    )
