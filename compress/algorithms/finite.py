"""Non-finite values (NaN, Inf) found where they would silently spoil a pruning run: a weight
of a damaged checkpoint poisons every score and Hessian built on it, and a stream carrying one
poisons every block after it. Each check is one line naming the tensor, before its work."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from compress.algorithms.scans import all_finite
from compress.core.errors import NumericsError


def non_finite_count(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are NaN or ±Inf (0 for a tensor without storage)."""
    if tensor.device.type == "meta" or not tensor.is_floating_point() or all_finite(tensor):
        return 0
    return int(tensor.numel() - torch.isfinite(tensor).sum())


def check_finite_weights(named: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """Refuse the first tensor of ``named`` holding NaN or Inf.

    Raises:
        NumericsError: naming the tensor, how many of its values are bad, and ``what`` to do.
    """
    for name, tensor in named:
        bad = non_finite_count(tensor.detach())
        if bad:
            raise NumericsError(
                f"{name} holds {bad:,} NaN or Inf value(s) of {tensor.numel():,}; {what}"
            )


def refuse_non_finite(parameters: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Refuse to save a model while any of its named ``parameters`` holds NaN or Inf (buffers
    may hold -Inf masks by design, so they are not passed)."""
    check_finite_weights(
        parameters,
        "nothing was written: a checkpoint damaged this way, or reconstruction that diverged "
        "(lower --recon-lr), gives such weights",
    )


def check_finite_stream(stream: Iterable[torch.Tensor], block: int) -> None:
    """Refuse activations leaving block ``block`` that hold NaN or Inf."""
    for batch in stream:
        bad = non_finite_count(batch)
        if bad:
            raise NumericsError(
                f"the activations leaving block {block} hold {bad:,} NaN or Inf value(s); the "
                "model overflows in this dtype on this text: try --dtype float32"
            )
