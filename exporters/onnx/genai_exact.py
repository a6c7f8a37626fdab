"""A quantized folder built by onnxruntime-genai's model builder from its recorded integers.

The builder reads pre-quantized GPTQ checkpoints (its ``loaders/gptq.py``): per projection
``qweight`` (int32, ``K / pack`` by ``N``, each int32 holding ``pack = 32 / bits`` codes along
``K``, lowest bits first), ``qzeros`` (int32, ``K / group`` by ``N / pack``, the zero point
minus one, GPTQ's convention), ``scales`` (``K / group`` by ``N``) and ``g_idx``. It unpacks
them, repacks them into MatMulNBits' layout and never builds the float graph of those layers,
so a 7B model converts in a few GiB. :func:`write_checkpoint` writes the folder's integers
(codes ``q + 2^(bits-1)``, zero point ``2^(bits-1)``) in that form, with the scales in float32
(the float16 values, widened exactly: the loader's dequantize-requantize round trip is then
exact); the other tensors (embedding, norms, LM head) are copied as they are, and the build
keeps them float: :func:`quant_config` excludes the LM head from the builder's own rounding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from exporters.onnx.exact import ACCURACY_LEVEL

# the files beside the weights the builder reads: config, generation settings, tokenizer
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def _pack_along_rows(u: np.ndarray, bits: int) -> np.ndarray:
    """int32 ``(rows / pack, cols)`` of codes ``u`` ``(rows, cols)``, lowest bits first."""
    per = 32 // bits
    rows, cols = u.shape
    grouped = u.astype(np.uint32).reshape(rows // per, per, cols)
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, :, None]
    return np.bitwise_or.reduce(grouped << shifts, axis=1).view(np.int32)


def gptq_tensors(name: str, q: torch.Tensor, scales: torch.Tensor, grid) -> dict:
    """The GPTQ tensors of one weight ``name`` (``...q_proj.weight``) from its integers ``q``
    ``(N, K)`` and float16 ``scales`` ``(N, groups)``."""
    bits, group = grid.bits, grid.group_size
    n, k = q.shape
    zero = 2 ** (bits - 1)
    codes = (q.to(torch.int16) + zero).numpy().T  # (K, N)
    zeros = np.full((k // group, n), zero - 1, dtype=np.uint32)  # GPTQ stores zero - 1
    stem = name.removesuffix(".weight")
    return {
        f"{stem}.qweight": torch.from_numpy(_pack_along_rows(codes, bits).copy()),
        f"{stem}.qzeros": torch.from_numpy(_pack_along_rows(zeros.T, bits).T.copy()),
        f"{stem}.scales": scales.float().T.contiguous(),
        f"{stem}.g_idx": torch.arange(k, dtype=torch.int32) // group,
    }


def write_checkpoint(folder: Path, target: Path, record) -> None:
    """Write ``folder`` as a GPTQ checkpoint the model builder loads, into ``target``: one
    safetensors file per source file, read one tensor at a time."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from compress.algorithms.quant.record import RECORD, integers

    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.name == RECORD:
            continue
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                if name in record.scales:
                    q = integers(tensor, record.scales[name], record.grid, name)
                    tensors |= gptq_tensors(name, q, record.scales[name], record.grid)
                else:
                    tensors[name] = tensor
        save_file(tensors, str(target / path.name))
    config = json.loads((Path(folder) / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "gptq",
        "bits": record.grid.bits,
        "group_size": record.grid.group_size,
        "desc_act": False,
        "sym": True,
    }
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for name in SIDE_FILES:
        if (Path(folder) / name).is_file():
            shutil.copy2(Path(folder) / name, target / name)


def quant_config(grid) -> dict:
    """The builder's ``--target_options``: MatMulNBits of the checkpoint's bits and group size
    computed in float32, and no rounding of its own: the LM head excluded, the embedding's
    Gather not among the quantized op types."""
    weights = {
        "type": grid.name,
        "block_size": grid.group_size,
        "accuracy_level": ACCURACY_LEVEL,
        "op_types": ["MatMul"],
        "overrides": [{"match": {"name": "/lm_head/MatMul"}, "exclude": True}],
    }
    return {"quant_config": {"weights": weights}}
