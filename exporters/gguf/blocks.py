"""GGUF's Q4_0 and Q8_0 blocks filled with a quantized folder's own integers and scales.

Both formats cut each row into blocks of 32 consecutive weights with one float16 scale ``d``
(gguf-py ``quants.py``, llama.cpp ``ggml-quants.c``):

- Q8_0: ``d`` then 32 int8 ``q``; a weight is ``q * d``;
- Q4_0: ``d`` then 16 bytes, byte ``j`` holding weight ``j`` in its low nibble and weight
  ``j + 16`` in its high nibble, each stored as ``q + 8``; a weight is ``(nibble - 8) * d``.

That is the folder's grid with group size 32 (int8 in [-128, 127], int4 in [-8, 7], float16
scale per group), so the blocks hold the evaluated integers with no second rounding.
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK = 32  # weights per block, both formats


def quant_type(bits: int):
    """The GGML type holding ``bits``-bit integers in blocks of 32."""
    from gguf import GGMLQuantizationType

    return {4: GGMLQuantizationType.Q4_0, 8: GGMLQuantizationType.Q8_0}[bits]


def pack(q: torch.Tensor, scales: torch.Tensor, bits: int) -> np.ndarray:
    """Blocks ``(rows, cols / 32 * block_bytes)`` (uint8) of int8 ``q`` ``(rows, cols)`` with its
    float16 ``scales`` ``(rows, cols / 32)``."""
    from gguf import GGML_QUANT_SIZES

    rows, cols = q.shape
    blocks = cols // BLOCK
    d = scales.to(torch.float16).contiguous().numpy().view(np.uint8).reshape(rows, blocks, 2)
    q = q.to(torch.int8).contiguous().numpy().reshape(rows, blocks, BLOCK)
    if bits == 8:
        payload = q.view(np.uint8)
    else:
        nibbles = (q + 8).astype(np.uint8)
        payload = nibbles[..., : BLOCK // 2] | (nibbles[..., BLOCK // 2 :] << 4)
    packed = np.concatenate([d, payload], axis=-1)
    assert packed.shape[-1] == GGML_QUANT_SIZES[quant_type(bits)][1]
    return packed.reshape(rows, -1)
