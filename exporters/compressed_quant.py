"""A quantized folder in compressed-tensors' ``pack-quantized`` format (W4A16 / W8A16): the
format vLLM serves and transformers 5 loads, holding exactly the folder's integers and scales.

The folder's record (:mod:`compress.algorithms.quant.record`) gives each block Linear's float16
scales; the weights are ``q * scale``. compressed-tensors' own lifecycle writes the checkpoint:
``apply_quantization_config`` attaches a symmetric ``int`` scheme (``group`` strategy, or
``channel`` for one scale per row) to those Linears, their ``weight_scale`` is set to the
record's scales, and ``ModelCompressor.compress_model`` rounds ``weight / scale`` and packs it
(:func:`~compressed_tensors.compressors.pack_quantized.pack_to_int32`). The packed integers are
unpacked and compared with the record's before anything is written, and the written folder is
read back through transformers and compared with the quantized folder bit for bit. Pruned
weights are ``q = 0``; there is no sparsity config.

Scale dtype: compressed-tensors dequantizes in the dtype of the scale it holds
(``q.to(scale.dtype) * scale``), then casts to the model's dtype. The scales are written in
float32 (float16 for a float16 model), so that product is exact and one rounding to the model's
dtype gives the folder's weights. transformers 5's default load keeps the modules compressed
with ``weight_scale`` in the model's dtype and decompresses on the first forward pass: exact for
float32 and float16 models; for a bfloat16 model the float16 scales are first rounded to
bfloat16, so its weights differ from the folder's (``CompressedTensorsConfig(dequantize=True)``
dequantizes from the stored float32 scales and is exact).

Needs compressed-tensors 0.15 or later (the transformers 5 stack); the legacy sparse formats of
:mod:`exporters.compressed` need 0.14.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.errors import BadInputError
from compress.core.report import ArtifactRecord, artifact_record, record_artifact

if TYPE_CHECKING:  # torch is imported where it runs, so the command loads without it
    import torch
    from torch import nn

    from compress.algorithms.quant.record import QuantRecord

PACK_QUANTIZED = "pack-quantized"
NEEDED_VERSION = "0.15"
VLLM_GROUP_SIZES = (0, 32, 64, 128)  # what vLLM's Marlin W4A16/W8A16 kernels take (0: per row)


def require_pack_quantized() -> None:
    """Refuse early, in one line, when the installed compressed-tensors cannot write it.

    Raises:
        BadInputError: compressed-tensors is missing or older than 0.15.
    """
    hint = (
        f"pip install 'compressed-tensors>={NEEDED_VERSION}' (with transformers 5), or use the "
        "quantized folder as it is (dequantized safetensors)"
    )
    try:
        from compressed_tensors import __version__
    except ImportError:
        raise BadInputError(f"pack-quantized checkpoints need compressed-tensors: {hint}") from None
    if _release(__version__) < _release(NEEDED_VERSION):
        raise BadInputError(
            f"compressed-tensors {__version__} is the legacy release of the sparse formats; "
            f"pack-quantized checkpoints need {NEEDED_VERSION} or later: {hint}"
        )


def _release(version: str) -> tuple[int, ...]:
    """``(major, minor)`` of a version string such as ``0.14.0.1`` or ``0.20.1``."""
    return tuple(
        int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2]
    )


def format_name(bits: int) -> str:
    """The ``artifacts`` key: ``compressed-tensors pack-quantized W4A16`` for int4 weights."""
    return f"compressed-tensors {PACK_QUANTIZED} W{bits}A16"


def weight_args(record: QuantRecord):
    """compressed-tensors' ``QuantizationArgs`` for the record's grid: symmetric ``int``,
    ``group`` of ``group_size`` columns, or ``channel`` (one scale per output row).

    Raises:
        BadInputError: a bit width the format cannot pack.
    """
    from compressed_tensors.quantization import QuantizationArgs

    grid = record.grid
    if not 1 <= grid.bits <= 8:
        raise BadInputError(
            f"compressed-tensors packs 1 to 8-bit integers; this folder's grid is int{grid.bits}: "
            "quantize it again with --quantize int4 or int8"
        )
    if grid.group_size:
        return QuantizationArgs(
            num_bits=grid.bits,
            type="int",
            symmetric=True,
            strategy="group",
            group_size=grid.group_size,
        )
    return QuantizationArgs(num_bits=grid.bits, type="int", symmetric=True, strategy="channel")


def quantized_linears(model: nn.Module, record: QuantRecord) -> dict[str, nn.Linear]:
    """The model's Linears the record quantizes, by module name.

    Raises:
        BadInputError: a recorded weight is missing or not an ``nn.Linear``'s.
    """
    from torch import nn

    modules = dict(model.named_modules())
    linears = {}
    for weight in sorted(record.scales):
        name = weight.removesuffix(".weight")
        module = modules.get(name)
        if not isinstance(module, nn.Linear) or not weight.endswith(".weight"):
            kind = type(module).__name__ if module is not None else "missing from the model"
            raise BadInputError(
                f"compressed-tensors pack-quantized holds nn.Linear weights; {weight} is {kind}: "
                "use the quantized folder as it is (dequantized safetensors)"
            )
        linears[name] = module
    return linears


def quantization_config(model: nn.Module, record: QuantRecord, linears: dict[str, nn.Linear]):
    """The package's ``QuantizationConfig``: one scheme on every ``Linear``, the ones the record
    leaves in the model's dtype (LM head, ``--skip``) ignored."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
    from torch import nn

    ignore = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name not in linears
    ]
    scheme = QuantizationScheme(targets=["Linear"], weights=weight_args(record))
    return QuantizationConfig(
        config_groups={"group_0": scheme}, ignore=ignore, format=PACK_QUANTIZED
    )


def scale_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype the scales are written in: one holding the float16 scales exactly in which
    ``q * scale`` is exact too (float32), or the float16 model's own dtype, whose correctly
    rounded product is the folder's weight."""
    import torch

    return torch.float16 if model_dtype == torch.float16 else torch.float32


def pack(model: nn.Module, record: QuantRecord):
    """Compress ``model`` (the quantized folder's weights) in place with compressed-tensors;
    return its ``ModelCompressor``.

    Raises:
        BadInputError: see :func:`quantized_linears`, :func:`weight_args`, ``check_grid``.
    """
    import torch
    from compressed_tensors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    from compress.algorithms.quant.grid import check_grid

    linears = quantized_linears(model, record)
    apply_quantization_config(model, quantization_config(model, record, linears))
    dtype = scale_dtype(model.dtype)
    for name, module in linears.items():
        check_grid(record.grid, module.in_features, name)
        scales = record.scales[f"{name}.weight"].to(dtype)
        module.weight_scale = torch.nn.Parameter(scales, requires_grad=False)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=PACK_QUANTIZED)
    compressor.compress_model(model)
    return compressor


def check_packed(model: nn.Module, record: QuantRecord, source: Path) -> None:
    """Every packed weight, unpacked by compressed-tensors, holds the integers of the folder's
    weight on its recorded grid (one layer at a time).

    Raises:
        BadInputError: a weight is off its grid, or the compressor rounded it elsewhere.
    """
    import torch
    from compressed_tensors.compressors.pack_quantized import unpack_from_int32

    from compress.algorithms.quant.record import integers

    modules = dict(model.named_modules())
    for weight, dense in folder_tensors(source, set(record.scales)):
        name = weight.removesuffix(".weight")
        module = modules[name]
        expected = integers(dense, record.scales[weight], record.grid, weight)
        shape = torch.Size(module.weight_shape.tolist())
        packed = unpack_from_int32(module.weight_packed.data, record.grid.bits, shape)
        if not torch.equal(packed, expected):
            raise BadInputError(
                f"compressed-tensors packed {name} to other integers than its record holds; "
                "nothing was written"
            )


def folder_tensors(folder: Path, names: set[str] | None = None):
    """``(name, tensor)`` for the tensors of ``folder``'s weight files (not its record), or only
    ``names``; one loaded at a time."""
    from safetensors import safe_open

    from compress.algorithms.quant.record import RECORD

    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.name == RECORD:
            continue
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if names is None or name in names:
                    yield name, f.get_tensor(name)


def load_packed(folder: Path) -> nn.Module:
    """A pack-quantized folder dequantized at load by transformers and compressed-tensors, from
    the scales as stored (exact for every model dtype)."""
    import warnings

    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    with warnings.catch_warnings():  # "the model already has a quantization_config": intended
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype="auto", quantization_config=CompressedTensorsConfig(dequantize=True)
        )
    return model.eval()


def differing_from_folder(model: nn.Module, folder: Path) -> list[str]:
    """Names of the tensors in ``folder``'s weight files that ``model`` does not hold bit for
    bit."""
    import torch

    state = model.state_dict()
    differing = []
    for name, theirs in folder_tensors(folder):
        mine = state.get(name)
        if mine is None or mine.dtype != theirs.dtype or not torch.equal(mine, theirs):
            differing.append(name)
    return differing


def write_pack_quantized(source: Path, staging: Path, record: QuantRecord) -> ArtifactRecord:
    """Fill the empty folder ``staging`` with the quantized folder ``source`` in the
    ``pack-quantized`` format, read it back bit-identical, and record it in its report.

    Raises:
        BadInputError: see :func:`pack`, :func:`check_packed`; or the read-back differs.
    """
    from exporters.compressed import copy_other_files, load_dense

    require_pack_quantized()
    model = load_dense(source)
    dtype = model.dtype
    compressor = pack(model, record)
    check_packed(model, record, source)
    model.save_pretrained(staging)
    compressor.update_config(str(staging))
    del model
    copy_other_files(source, staging)
    differing = differing_from_folder(load_packed(staging), source)
    if differing:
        raise BadInputError(
            f"pack-quantized read back differs from {source} in {differing[0]} "
            f"({len(differing)} tensors); nothing was written"
        )
    artifact = deploy_record(source, staging, record, dtype)
    record_artifact(staging, artifact)
    return artifact


def deploy_record(
    source: Path, written: Path, record: QuantRecord, dtype: torch.dtype
) -> ArtifactRecord:
    """The ``artifacts`` record: files and bytes beside the quantized folder's, the read-back
    check, the scale dtype and whether transformers' default load is exact, how to load it."""
    import torch

    from compress.algorithms.quant.record import RECORD
    from exporters.compressed import _installed_version, folder_bytes, tensor_bytes

    layers = {name.removesuffix(".weight") for name in record.scales}
    _, linear_bytes = tensor_bytes(written, layers)
    _, dense_linear_bytes = tensor_bytes(source, layers, exclude=(RECORD,))
    dense = folder_bytes(source)
    files = {f.name: f.stat().st_size for f in sorted(Path(written).iterdir()) if f.is_file()}
    stored = str(scale_dtype(dtype)).removeprefix("torch.")
    grid = record.grid
    return artifact_record(
        format=format_name(grid.bits),
        path=".",
        files=files,
        parity={"round_trip": "bit-identical weights"},
        load=load_snippets(stored, default_exact=dtype != torch.bfloat16),
        details={
            "bits": grid.bits,
            "group_size": grid.group_size,
            "strategy": "group" if grid.group_size else "channel",
            "scale_dtype": stored,
            "default_load_exact": dtype != torch.bfloat16,  # see the module docstring
            "vllm_marlin_group_size": grid.group_size in VLLM_GROUP_SIZES,
            "dense_bytes": dense,
            "ratio": sum(files.values()) / dense,
            "linear_bytes": linear_bytes,
            "dense_linear_bytes": dense_linear_bytes,
            "linear_ratio": linear_bytes / max(dense_linear_bytes, 1),
            "latency": None,
            "package": f"compressed-tensors=={_installed_version()}",
        },
    )


def load_snippets(stored: str, default_exact: bool) -> list[dict]:
    """How to load the folder (``{REPO}`` stands for the repo id or folder): transformers'
    default load (exact unless a bfloat16 model rounds its scales), the exact dequantizing
    load, vLLM."""
    default = (
        "exact"
        if default_exact
        else "not exact: the float16 scales are rounded to bfloat16 in this bfloat16 model"
    )
    return [
        {
            "runtime": "transformers 5 + compressed-tensors>=0.15 (decompresses on the first "
            f"forward, in the model's dtype; {default})",
            "code": 'from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained("{REPO}", dtype="auto")',
        },
        {
            "runtime": f"transformers 5, dequantized at load from the {stored} scales (the "
            "weights the model was evaluated with, bit for bit)",
            "code": "from transformers import AutoModelForCausalLM, CompressedTensorsConfig\n\n"
            "model = AutoModelForCausalLM.from_pretrained(\n"
            '    "{REPO}", dtype="auto", quantization_config=CompressedTensorsConfig(dequantize=True)\n'
            ")",
        },
        {
            "runtime": "vLLM (W4A16/W8A16 kernels, scales in the model's dtype; not run here)",
            "code": 'from vllm import LLM\n\nllm = LLM(model="{REPO}")',
        },
    ]
