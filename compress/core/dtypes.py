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
