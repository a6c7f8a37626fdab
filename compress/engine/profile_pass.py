"""The non-uniform profiles' first pass: per block, its outlier ratio (OWL) and its error at a
few candidate sparsities (``errors``).

On the dense stream, block by block: gather the pruners' statistics (siblings sharing them, as
in the real run) in the same forward that gives the block's dense output, take the block's
outlier ratio from their scores, then for each candidate prune every layer of the block,
measure the block's normalized output error against its dense output, and put the dense
weights back. Cheap next to the real run: no reconstruction, one forward per block for OWL, and
each candidate only re-runs the pruner's mask (and SparseGPT's update, its factorisation
reused) and one block forward. The plans then come from :mod:`compress.algorithms.sparsity_profile`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from compress.algorithms.sparsity_profile import outlier_ratio
from compress.model.blocks import weight_view
from compress.model.moe import unfused_experts
from compress.model.placement import execution_device, onloaded

if TYPE_CHECKING:
    from compress.engine.steps import Engine


def first_pass(
    engine: Engine, ids: torch.Tensor, sparsities: list[float], owl_m: float
) -> tuple[list[float], list[list[tuple[float, float]]]]:
    """Per block: the outlier ratio at ``owl_m``, and ``(sparsity, normalized output error)`` for
    each of ``sparsities`` (none: statistics and ratios only)."""
    from compress.engine.steps import stream_error

    config = engine.config
    batch = config.calibration.batch_size
    s = engine.activations.capture(engine.adapter, ids, batch, dense=False)
    stream, ratios, curves = s.sparse, [], []
    for i in range(len(engine.adapter)):
        block = engine.adapter.blocks[i]
        device = execution_device(block, engine.accelerator)
        with onloaded([block], device), unfused_experts([block]):
            layers = engine.adapter.prunable_layers(i, config.skip)
            groups = engine.adapter.sibling_groups(i, layers)
            pruners = engine._pruners(groups, layers)
            leaders = {group[0]: pruners[group[0]] for group in groups}
            if pruners and next(iter(pruners.values())).needs_data:
                dense_out = engine._collect(i, leaders, layers, stream, s.calls, keep_outputs=True)
            else:
                dense_out = engine.forward([i], stream, s.calls)
            ratios.append(outlier_ratio((p.scores() for p in pruners.values()), owl_m))
            saved = {name: weight_view(module).detach().clone() for name, module in layers.items()}
            curve = []
            for sparsity in sparsities:
                for pruner in pruners.values():
                    pruner.prune(sparsity, config.parsed_pattern)
                error = stream_error(engine.forward([i], stream, s.calls), dense_out)
                curve.append((sparsity, error or 0.0))
                with torch.no_grad():
                    for name, module in layers.items():
                        weight_view(module).copy_(saved[name])
            for pruner in leaders.values():
                pruner.free()
        curves.append(curve)
        stream = dense_out
    return ratios, curves
