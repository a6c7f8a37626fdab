"""The run's plan before it starts: one timed forward of block 0 at the run's shapes, turned into
an estimate of the whole run (:mod:`.estimate`) and, when that is over an hour, the calibration
that fits one.

The pruner's statistics are timed too, on one random sequence per distinct layer width
(:func:`statistics_seconds`); the rest of its work is counted in flops (``Pruner.work``).

The timed forward runs on random token ids of the run's batch shape (``--batch-size`` sequences
of ``--seqlen`` tokens, fewer sequences where that exceeds :data:`PROBE_TOKENS`, so a 7B block
on a CPU takes seconds, not minutes), in the model's dtype, on the device block 0 runs on in the
run, after one short warm-up forward (first-call costs: allocation, kernel selection).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from compress.algorithms.pruners import PRUNERS
from compress.algorithms.sparsity_profile import candidates
from compress.core.config import PruneConfig, SparsityProfile
from compress.core.report import EstimateSection, estimate_section
from compress.engine.estimate import (
    ModelShape,
    RunFacts,
    estimate,
    estimate_line,
    fitting_settings,
    throughput,
)
from compress.model.blocks import BlockAdapter, is_prunable, weight_view
from compress.model.moe import unfused_experts
from compress.model.placement import execution_device, onloaded

PROBE_TOKENS = 4096  # the timed forward's tokens at most (one whole sequence at least)
WARM_UP_TOKENS = 16


def model_shape(adapter: BlockAdapter, config: PruneConfig) -> tuple[ModelShape, Counter[int]]:
    """Block 0's linear weights and its pruner's work (per distinct layer input), the number
    of blocks, the hidden width and the head's weights; and how many distinct layer inputs of
    each width block 0 has (the statistics' work, timed by :func:`statistics_seconds`)."""
    model, block = adapter.model, adapter.blocks[0]
    pruner_cls, options = PRUNERS[config.method.value], config.pruner_options()
    with unfused_experts([block]):
        linear = sum(weight_view(m).numel() for m in block.modules() if is_prunable(m))
        layers = adapter.prunable_layers(0, config.skip)
        groups = [
            [weight_view(layers[name]).shape for name in g]
            for g in adapter.sibling_groups(0, layers)
        ]
    widths = Counter(shapes[0][1] for shapes in groups)
    head = model.get_output_embeddings()
    shape = ModelShape(
        blocks=len(adapter),
        linear_weights=linear,
        hidden=model.get_input_embeddings().embedding_dim,
        head_weights=0 if head is None else head.weight.numel(),
        pruner_fixed=sum(
            pruner_cls.work(shapes[0][1], sum(rows for rows, _ in shapes), options)
            for shapes in groups
        ),
        pruner_per_token=0.0,  # set from statistics_seconds
        pruner_needs_data=pruner_cls.needs_data,
    )
    return shape, widths


@torch.no_grad()
def statistics_seconds(
    config: PruneConfig, widths: Counter[int], seqlen: int, dtype: torch.dtype, device: torch.device
) -> float:
    """Seconds the pruner's statistics of one block take per calibration sequence of ``seqlen``
    tokens: each distinct width's ``add_batch`` timed once on a random sequence (after a short
    warm-up), counted once per layer input of that width. Timed, not counted in flops, because
    their cost at a few hundred tokens a sequence is mostly small products and memory traffic
    (SparseGPT's Gram bands and exact sums; their memory is held only while timed)."""
    pruner_cls, options = PRUNERS[config.method.value], config.pruner_options()
    if not pruner_cls.needs_data:
        return 0.0
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for width, count in widths.items():
        pruner = pruner_cls(torch.zeros(1, width, dtype=dtype, device=device), "probe", options)
        x = torch.randn(1, seqlen, width, generator=generator).to(device=device, dtype=dtype)
        pruner.add_batch(x[:, :WARM_UP_TOKENS])
        device_sync(device)
        start = time.perf_counter()
        pruner.add_batch(x)
        device_sync(device)
        total += count * (time.perf_counter() - start)
        pruner.free()
    return total


def device_sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a GPU's kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def timed_forward(
    adapter: BlockAdapter, rows: int, seqlen: int, accelerator: torch.device
) -> float:
    """Seconds of one forward of block 0 on ``rows`` random sequences of ``seqlen`` tokens."""
    vocab = adapter.model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    warm_ids = torch.randint(vocab, (1, min(seqlen, WARM_UP_TOKENS)), generator=generator)
    ids = torch.randint(vocab, (rows, seqlen), generator=generator)
    (warm, x), (warm_calls, calls) = adapter.capture([warm_ids, ids])
    block = adapter.blocks[0]
    device = execution_device(block, accelerator)
    with onloaded([block], device):
        adapter.run_block(0, warm, warm_calls[0])
        device_sync(device)
        start = time.perf_counter()
        adapter.run_block(0, x, calls[0])
        device_sync(device)
        return time.perf_counter() - start


@dataclass(frozen=True)
class Plan:
    """The estimate made before pruning: the line to print and its report.json section."""

    line: str
    section: EstimateSection


def plan_run(
    model: nn.Module,
    config: PruneConfig,
    accelerator: torch.device,
    *,
    elapsed: float,
    one_pass: bool,
    holdout_nsamples: int,
) -> Plan:
    """Time block 0's forward at the run's shapes and estimate the run as ``config`` sets it
    up (``elapsed``: seconds spent loading so far; ``one_pass``: whether ``--one-pass``
    applies; ``holdout_nsamples``: held-out sequences, 0 for none)."""
    calib = config.calibration
    adapter = BlockAdapter(model)
    shape, widths = model_shape(adapter, config)
    batch = calib.nsamples if one_pass else min(calib.batch_size, calib.nsamples)
    rows = max(1, min(batch, PROBE_TOKENS // calib.seqlen))
    seconds = timed_forward(adapter, rows, calib.seqlen, accelerator)
    fps = throughput(shape, seconds, rows, calib.seqlen)
    dtype = next(model.parameters()).dtype
    device = execution_device(adapter.blocks[0], accelerator)
    per_sequence = statistics_seconds(config, widths, calib.seqlen, dtype, device)
    shape = replace(shape, pruner_per_token=per_sequence / calib.seqlen * fps)
    tried = config.sparsity_profile is SparsityProfile.errors
    facts = RunFacts(
        flops_per_second=fps,
        elapsed=elapsed,
        one_pass=one_pass,
        holdout_nsamples=holdout_nsamples,
        eval_windows=config.evaluation.max_windows if config.evaluation.enabled else None,
        profile_candidates=len(candidates(config.sparsity, config.owl_lambda)) if tried else 0,
    )
    total = estimate(config, shape, facts, calib.nsamples, calib.seqlen)
    suggestion = fitting_settings(config, shape, facts)
    name = str(dtype).removeprefix("torch.")
    forward = f"one block's forward {seconds:.2g} s at {rows} x {calib.seqlen} {name}"
    section = estimate_section(
        seconds=total.seconds,
        prune_seconds=total.prune_seconds,
        forward_seconds=seconds,
        forward_shape=(rows, calib.seqlen),
        flops_per_second=facts.flops_per_second,
        suggestion=None if suggestion is None else asdict(suggestion),
    )
    return Plan(estimate_line(total, shape.blocks, forward, suggestion), section)
