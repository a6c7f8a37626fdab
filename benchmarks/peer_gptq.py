"""The peer of the project's int4 quantization: llm-compressor's GPTQ (W4A16, symmetric int4 in
groups of input columns) run through ``shared/bench/llmc_cpu_peer.py`` in its own venv, and its
compressed-tensors ``pack-quantized`` folder read back into dense float weights, so the
project's evaluator scores the peer's weights in the project's own model and tokenizer. Scoring
through the peer's stack is not comparable: transformers 5.17 tokenizes the embedded model's
evaluation text into other (and more) token ids than the project's stack, which multiplies the
perplexity of the dense and the quantized model alike.

The read-back is this module's own, not compressed-tensors' (which needs the peer's stack): each
Linear's ``weight_packed`` holds ``num_bits``-bit integers, offset by ``2**(num_bits-1)`` to be
unsigned, element ``i`` of a row at bits ``i*num_bits`` upward of the row's int32 stream (word
``i*num_bits // 32``, lowest bits first); ``weight_scale`` is one scale per row and group of
``group_size`` consecutive columns; an asymmetric scheme adds ``weight_zero_point``, packed the
same way along the rows (dim 0). The dense weight is ``(q - zero_point) * scale``.

    from peer_gptq import run_peer_gptq, load_pack_quantized
    run = run_peer_gptq(peer_python, model_dir, windows_json, out, group_size=32, dtype="float32")
    load_pack_quantized(model, run.folder)   # the embedded model, loaded by the project
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import beside_repo, measured  # noqa: E402

from compress.core.errors import BadInputError  # noqa: E402

PEER_SCRIPT = beside_repo("shared/bench/llmc_cpu_peer.py")
WORD_BITS = 32


@dataclass(frozen=True)
class PeerRun:
    """One GPTQ run of the peer: its whole process (interpreter start to exit) and its output."""

    seconds: float
    peak_rss_bytes: int
    folder: Path
    line: dict  # the JSON line the peer script prints (its oneshot seconds alone, versions)


def run_peer_gptq(
    python: Path,
    model: Path,
    windows: Path,
    out: Path,
    group_size: int = 32,
    dtype: str = "float32",
    script: Path = PEER_SCRIPT,
) -> PeerRun:
    """llm-compressor's GPTQModifier on ``model`` calibrated on the token-id lists in
    ``windows``, in ``dtype``, int4 symmetric in groups of ``group_size``; the pack-quantized
    folder is written to ``out``. Runs under the peer's own interpreter ``python``, without the
    project's PYTHONPATH (the peer needs its own transformers)."""
    command = [str(python), str(script), str(model), "-", str(out), "--method", "gptq"]
    command += ["--group-size", str(group_size), "--windows", str(windows), "--dtype", dtype]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = measured(command, env)
    line = json.loads(run["stdout"].strip().splitlines()[-1])
    return PeerRun(run["seconds"], run["peak_rss_bytes"], out, line)


def unpack_int32(packed: torch.Tensor, num_bits: int, columns: int) -> torch.Tensor:
    """The signed ``num_bits``-bit integers (int8) that compressed-tensors' ``pack_to_int32``
    packed along dim 1 of ``packed`` (rows x words), the first ``columns`` of each row."""
    if packed.dtype != torch.int32 or packed.ndim != 2:
        raise BadInputError(f"weight_packed is {packed.dtype} {tuple(packed.shape)}, not 2-D int32")
    if WORD_BITS % num_bits:
        raise BadInputError(f"{num_bits}-bit packing straddles words; only 2, 4 and 8 are read")
    per_word = WORD_BITS // num_bits
    if packed.shape[1] * per_word < columns:
        raise BadInputError(f"weight_packed holds fewer than {columns} columns per row")
    shifts = torch.arange(per_word, dtype=torch.int32) * num_bits
    fields = (packed.unsqueeze(-1) >> shifts) & ((1 << num_bits) - 1)
    unsigned = fields.reshape(packed.shape[0], -1)[:, :columns]
    return (unsigned - (1 << (num_bits - 1))).to(torch.int8)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    group_size: int,
    zero_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(q - zero_point) * scale`` with one scale (and zero point) per row and group of
    ``group_size`` consecutive columns, in the scale's dtype."""
    rows, columns = q.shape
    if columns % group_size or scale.shape != (rows, columns // group_size):
        raise BadInputError(
            f"weight_scale {tuple(scale.shape)} does not match a {rows} x {columns} weight "
            f"in groups of {group_size}"
        )
    grouped = q.to(scale.dtype).reshape(rows, -1, group_size)
    if zero_point is not None:
        grouped = grouped - zero_point.to(scale.dtype).unsqueeze(-1)
    return (grouped * scale.unsqueeze(-1)).reshape(rows, columns)


def _weights_scheme(config: dict) -> dict:
    """The one weights scheme of a pack-quantized folder's ``quantization_config``."""
    quantization = config.get("quantization_config") or {}
    if quantization.get("format") != "pack-quantized":
        raise BadInputError(f"not a pack-quantized folder (format {quantization.get('format')!r})")
    groups = list(quantization["config_groups"].values())
    if len(groups) != 1 or groups[0].get("input_activations"):
        raise BadInputError("only one weight-only config group is read back")
    weights = groups[0]["weights"]
    if weights["type"] != "int" or weights["strategy"] != "group":
        raise BadInputError(f"weights {weights['type']} {weights['strategy']}: only int group")
    return weights


def read_pack_quantized(folder: Path) -> dict[str, torch.Tensor]:
    """The dense float weights of every quantized module in ``folder``, keyed ``NAME.weight``."""
    from safetensors.torch import load_file

    weights = _weights_scheme(json.loads((folder / "config.json").read_text()))
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(file)
    if any(name.endswith(".weight_g_idx") for name in tensors):
        raise BadInputError("the folder has g_idx (activation-order groups); not read back")
    dense = {}
    for name in (n.removesuffix(".weight_packed") for n in tensors if n.endswith("_packed")):
        rows, columns = tensors[f"{name}.weight_shape"].tolist()
        q = unpack_int32(tensors[f"{name}.weight_packed"], weights["num_bits"], columns)
        zero_point = tensors.get(f"{name}.weight_zero_point")
        if zero_point is not None:  # packed along the rows: unpack the transpose
            zero_point = unpack_int32(zero_point.t().contiguous(), weights["num_bits"], rows).t()
        dense[f"{name}.weight"] = dequantize(
            q, tensors[f"{name}.weight_scale"], weights["group_size"], zero_point
        )
    return dense


def load_pack_quantized(model: nn.Module, folder: Path) -> list[str]:
    """Copy the dequantized weights of ``folder`` into ``model`` (same architecture, loaded by
    the project) in the model's dtype; returns the names replaced. Every quantized weight must
    name a parameter of ``model`` of the same shape."""
    params = dict(model.named_parameters())
    dense = read_pack_quantized(folder)
    for name, weight in dense.items():
        if name not in params or params[name].shape != weight.shape:
            raise BadInputError(f"{name} {tuple(weight.shape)} is not a parameter of the model")
        with torch.no_grad():
            params[name].copy_(weight.to(params[name].dtype))
    return sorted(dense)
