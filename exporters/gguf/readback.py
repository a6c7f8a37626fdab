"""The written file read back with gguf-py: each tensor dequantized (``gguf.dequantize``, what
transformers' loader runs) and compared with the folder's weight, bit for bit, in the folder's
dtype (Q/K rows compared in llama.cpp's order)."""

from __future__ import annotations

from pathlib import Path

import torch

from exporters.gguf.convert import Source, gguf_names, load
from exporters.gguf.families import permute_rows, qk_heads


def read_tensors(path: Path) -> dict:
    """The file's tensors by GGUF name (gguf-py's reader: memory-mapped, read when used)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {t.name: t for t in reader.tensors}


def dequantized(tensor) -> torch.Tensor:
    """A tensor of the file as float32, in transformers' shape (``(rows, cols)``)."""
    import numpy as np
    from gguf import dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape))
    return torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type))).reshape(shape)


def differing_tensors(path: Path, source: Source) -> list[str]:
    """Names (in the folder) of the tensors whose read-back is not bit-identical, or missing."""
    tensors = read_tensors(path)
    differing = []
    for hf_name, name in gguf_names(source).items():
        expected = load(source, hf_name)
        heads = qk_heads(hf_name, source.config) if source.family.permute_qk else None
        if heads:
            expected = permute_rows(expected, heads)
        if name not in tensors:
            differing.append(hf_name)
            continue
        got = dequantized(tensors[name]).to(expected.dtype)
        if got.shape != expected.shape or not torch.equal(got, expected):
            differing.append(hf_name)
    return differing
