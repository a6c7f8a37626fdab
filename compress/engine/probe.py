"""The run's plan before it starts: one timed forward of block 0 at the run's shapes, turned into
an estimate of the whole run (:mod:`.estimate`) and, when that is over an hour, the calibration
that fits one.

The timed forward runs on random token ids of the run's batch shape (``--batch-size`` sequences
of ``--seqlen`` tokens, fewer sequences where that exceeds :data:`PROBE_TOKENS`, so a 7B block
on a CPU takes seconds, not minutes), in the model's dtype, on the device block 0 runs on in the
run, after one short warm-up forward (first-call costs: allocation, kernel selection).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

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


def model_shape(adapter: BlockAdapter, config: PruneConfig) -> ModelShape:
    """Block 0's linear weights and its pruner's work (per distinct layer input), the number
    of blocks, the hidden width and the head's weights."""
    model, block = adapter.model, adapter.blocks[0]
    pruner_cls, options = PRUNERS[config.method.value], config.pruner_options()
    with unfused_experts([block]):
        linear = sum(weight_view(m).numel() for m in block.modules() if is_prunable(m))
        layers = adapter.prunable_layers(0, config.skip)
        work = [
            pruner_cls.work(weight_view(layers[group[0]]).shape[1], rows, options)
            for group in adapter.sibling_groups(0, layers)
            for rows in [sum(weight_view(layers[name]).shape[0] for name in group)]
        ]
    head = model.get_output_embeddings()
    return ModelShape(
        blocks=len(adapter),
        linear_weights=linear,
        hidden=model.get_input_embeddings().embedding_dim,
        head_weights=0 if head is None else head.weight.numel(),
        pruner_fixed=sum(fixed for fixed, _ in work),
        pruner_per_token=sum(per_token for _, per_token in work),
        pruner_needs_data=pruner_cls.needs_data,
    )


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
    shape = model_shape(adapter, config)
    batch = calib.nsamples if one_pass else min(calib.batch_size, calib.nsamples)
    rows = max(1, min(batch, PROBE_TOKENS // calib.seqlen))
    seconds = timed_forward(adapter, rows, calib.seqlen, accelerator)
    tried = config.sparsity_profile is SparsityProfile.errors
    facts = RunFacts(
        flops_per_second=throughput(shape, seconds, rows, calib.seqlen),
        elapsed=elapsed,
        one_pass=one_pass,
        holdout_nsamples=holdout_nsamples,
        eval_windows=config.evaluation.max_windows if config.evaluation.enabled else None,
        profile_candidates=len(candidates(config.sparsity, config.owl_lambda)) if tried else 0,
    )
    total = estimate(config, shape, facts, calib.nsamples, calib.seqlen)
    suggestion = fitting_settings(config, shape, facts)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    forward = f"one block's forward {seconds:.2g} s at {rows} x {calib.seqlen} {dtype}"
    section = estimate_section(
        seconds=total.seconds,
        prune_seconds=total.prune_seconds,
        forward_seconds=seconds,
        forward_shape=(rows, calib.seqlen),
        flops_per_second=facts.flops_per_second,
        suggestion=None if suggestion is None else asdict(suggestion),
    )
    return Plan(estimate_line(total, shape.blocks, forward, suggestion), section)
