"""Pruning a CBM's concept predictor with the project's pruners.

Every ``nn.Linear`` of ``g`` is pruned in forward order; each layer's pruner is calibrated on
the inputs that reach it (captured by a forward hook while ``g`` runs on the calibration
inputs, earlier layers already pruned, as SparseGPT does block by block). ``f`` is left dense:
it is the part an expert's corrected concepts flow through.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.algorithms.masks import SparsityPattern, measured_sparsity
from compress.algorithms.pruners import PRUNERS
from compress.core.errors import BadInputError


def linear_layers(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def prune_linears(
    module: nn.Module,
    inputs: torch.Tensor,
    method: str,
    sparsity: float,
    pattern: SparsityPattern,
    batch_size: int = 1024,
) -> tuple[dict[str, dict], dict[nn.Parameter, torch.Tensor]]:
    """Prune every Linear of ``module`` in place.

    Returns:
        per-layer records {name: {shape, sparsity, seconds}} and the keep-masks by weight.

    Raises:
        BadInputError: unknown method, sparsity outside [0, 1), or no Linear layer.
    """
    if method not in PRUNERS:
        raise BadInputError(f"method {method!r} is unknown: choose one of {', '.join(PRUNERS)}")
    if not 0 <= sparsity < 1:
        raise BadInputError(f"sparsity {sparsity}: use a fraction in [0, 1), e.g. 0.5")
    layers = linear_layers(module)
    if not layers:
        raise BadInputError("the concept predictor has no nn.Linear layer to prune")
    module.eval()
    records, masks = {}, {}
    for name, linear in layers:
        pattern.check_width(linear.in_features, name)
        pruner = PRUNERS[method](linear.weight.data, name)
        if pruner.needs_data:
            hook = linear.register_forward_hook(lambda m, args, out, p=pruner: p.add_batch(args[0]))
            try:
                for batch in inputs.split(batch_size):
                    module(batch)
            finally:
                hook.remove()
        result = pruner.prune(sparsity, pattern)
        pruner.free()
        masks[linear.weight] = result.mask
        records[name] = {
            "shape": list(linear.weight.shape),
            "sparsity": measured_sparsity(linear.weight.data),
            "seconds": result.seconds,
        }
    return records, masks
