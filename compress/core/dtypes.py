"""The dtype names options accept, and the torch dtypes they stand for."""

from __future__ import annotations

from enum import Enum

import torch

from compress.core.errors import BadInputError

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str | Enum, auto: torch.dtype) -> torch.dtype:
    """The torch dtype called ``name`` (a string or a str-Enum such as
    :class:`~compress.core.shared_options.DType`); ``auto`` stands for the caller's choice."""
    name = name.value if isinstance(name, Enum) else name
    if name == "auto":
        return auto
    if name not in TORCH_DTYPES:
        raise BadInputError(
            f"dtype {name!r} is not supported: choose auto, {', '.join(TORCH_DTYPES)}"
        )
    return TORCH_DTYPES[name]


def emulated_on_this_cpu(dtype: torch.dtype) -> bool:
    """Whether this x86 CPU lacks the instructions for ``dtype``'s matrix products (bfloat16:
    AVX512-BF16 or AMX; float16: AMX-FP16), so oneDNN emulates them: on an AVX2-only EPYC a
    bfloat16 matmul ran ~45x slower than float32. Other architectures are not judged."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if dtype is torch.bfloat16:
        return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    if dtype is torch.float16:
        return not torch.cpu._is_amx_fp16_supported()
    return False
