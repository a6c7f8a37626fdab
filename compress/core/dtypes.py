"""The dtype names options accept, and the torch dtypes they stand for."""

from __future__ import annotations

import torch

from compress.core.errors import BadInputError

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str, auto: torch.dtype) -> torch.dtype:
    """The torch dtype called ``name``; ``auto`` stands for the caller's choice ``auto``."""
    if name == "auto":
        return auto
    if name not in TORCH_DTYPES:
        raise BadInputError(
            f"dtype {name!r} is not supported: choose auto, {', '.join(TORCH_DTYPES)}"
        )
    return TORCH_DTYPES[name]
