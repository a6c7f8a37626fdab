"""The ``errors`` profile's first pass: each block's error at a few candidate sparsities.

On the dense stream, block by block: gather the pruners' statistics once, then for each
candidate prune every layer of the block, measure the block's normalized output error against
its dense output, and put the dense weights back. Cheap next to the real run: no
reconstruction, one statistics pass, and the candidates only re-run the pruner's mask (and
SparseGPT's update) and one block forward each. The allocation then comes from
:func:`compress.sparsity_profile.allocate_by_errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from compress.blocks import weight_view
from compress.engine.statistics import collect_statistics
from compress.placement import execution_device, onloaded
from compress.pruners import PRUNERS

if TYPE_CHECKING:
    from compress.engine.steps import Engine


def block_error_curves(
    engine: Engine, ids: torch.Tensor, sparsities: list[float]
) -> list[list[tuple[float, float]]]:
    """Per block, ``(sparsity, normalized output error)`` for each of ``sparsities``."""
    from compress.engine.steps import stream_error

    config = engine.config
    batch = config.calibration.batch_size
    s = engine.activations.capture(engine.adapter, ids, batch, dense=False)
    stream, curves = s.sparse, []
    for i in range(len(engine.adapter)):
        block = engine.adapter.blocks[i]
        with onloaded([block], execution_device(block, engine.accelerator)):
            dense_out = engine.forward([i], stream, s.calls)
            layers = engine.adapter.prunable_layers(i, config.skip)
            pruners = {
                name: PRUNERS[config.method.value](weight_view(m), name, **config.pruner_options())
                for name, m in layers.items()
            }
            if pruners and next(iter(pruners.values())).needs_data:

                def run(b: int, x: torch.Tensor, i: int = i) -> torch.Tensor:
                    return engine._run([i], s.calls, b, x)

                collect_statistics(run, stream, pruners, layers, batch, engine.stats_samples)
                for pruner in pruners.values():
                    for total in pruner.statistics():
                        total.all_reduce_()
            saved = {name: weight_view(m).detach().clone() for name, m in layers.items()}
            curve = []
            for sparsity in sparsities:
                for pruner in pruners.values():
                    pruner.prune(sparsity, config.parsed_pattern)
                error = stream_error(engine.forward([i], stream, s.calls), dense_out)
                curve.append((sparsity, error or 0.0))
                with torch.no_grad():
                    for name, m in layers.items():
                        weight_view(m).copy_(saved[name])
            for pruner in pruners.values():
                pruner.free()
        curves.append(curve)
        stream = dense_out
    return curves
