"""Whole-tensor counts over every weight of a model: exact zeros, and whether any value is NaN
or ±Inf.

These scans read every weight of a model several times per run (sparsity per layer and overall,
the non-finite checks before pruning and before saving), so on a CPU they are read through numpy:
torch's CPU kernels for ``count_nonzero``, ``isfinite`` and comparisons producing bool run an
order of magnitude slower than numpy's vectorised ``count_nonzero`` and integer ``max`` on the
same memory (``benchmarks/scans.py`` prints both). 16-bit floats are read as their bits, which
numpy's integer kernels handle at full speed and without a float copy; other devices use torch.
"""

from __future__ import annotations

import numpy as np
import torch

# a 16-bit float's bits as int16: the mask dropping the sign, and the smallest magnitude bits
# with an all-ones exponent (Inf; NaN above it)
_HALF_BITS = {torch.bfloat16: (0x7FFF, 0x7F80), torch.float16: (0x7FFF, 0x7C00)}
_PART = 1 << 20  # elements per numpy call on 16-bit bits: a 2 MB temporary, never a weight copy


def _parts(flat: torch.Tensor) -> list[np.ndarray]:
    bits = flat.view(torch.int16).numpy()
    return [bits[i : i + _PART] for i in range(0, bits.size, _PART)]


def _numpy_readable(flat: torch.Tensor) -> bool:
    return flat.device.type == "cpu" and (
        flat.dtype in _HALF_BITS or flat.dtype in (torch.float32, torch.float64)
    )


def zero_count(weight: torch.Tensor) -> int:
    """Number of exact zeros (+0 and -0) in ``weight`` (a pruned entry is exactly zero); NaN,
    infinities and subnormals are not zeros."""
    flat = weight.detach().reshape(-1)
    if not _numpy_readable(flat):
        return flat.numel() - int(torch.count_nonzero(flat))
    if flat.dtype in _HALF_BITS:
        magnitude, _ = _HALF_BITS[flat.dtype]
        nonzero = sum(int(np.count_nonzero(part & magnitude)) for part in _parts(flat))
    else:
        nonzero = int(np.count_nonzero(flat.numpy()))  # -0.0 == 0 in numpy as in IEEE
    return flat.numel() - nonzero


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether no entry of the floating-point ``tensor`` is NaN or ±Inf.

    For 32/64-bit floats the sum decides: it is NaN or infinite whenever an entry is, and a
    finite sum proves every entry finite. A sum that overflowed on finite entries only answers
    False here; callers count exactly (:func:`compress.algorithms.finite.non_finite_count`)."""
    flat = tensor.detach().reshape(-1)
    if flat.dtype in _HALF_BITS and flat.device.type == "cpu":
        magnitude, infinity = _HALF_BITS[flat.dtype]
        return all(int((part & magnitude).max()) < infinity for part in _parts(flat) if part.size)
    return bool(torch.isfinite(flat.sum()))
