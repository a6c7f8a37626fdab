"""How much each element of each block's output matters to the LM loss (``--recon-loss fisher``).

Plain MSE counts every element of a block's output alike, and the residual stream is not
alike: from block 12 of the embedded SmolLM2-135M on, the first token of every window carries
an activation of about 24,000 on one channel, 98% of the stream's squared norm, so MSE is
mostly that one element's error. BRECQ (Li et al., ICLR 2021) weights a block's squared output
error by the diagonal of the Fisher information of the task loss with respect to that output,
its second-order effect on the loss: ``ΔL ≈ Σ g² δ²`` with ``g = ∂L/∂h`` at the dense model.
Here ``L`` is the dense model's summed next-token loss on the calibration text, and ``g`` is
taken one sequence at a time, so memory stays that of one sequence's backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress import distributed

Stream = list[torch.Tensor]


def _sequence_gradients(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor) -> list:
    """``∂L/∂h_i`` for every block ``i`` on one batch of sequences (``L``: summed token NLL)."""
    outputs: list[torch.Tensor] = []

    def keep_output(module: nn.Module, args: tuple, out) -> None:
        outputs.append(out[0] if isinstance(out, tuple) else out)

    embed = model.get_input_embeddings()
    ids = ids.to(embed.weight.device)
    handles = [block.register_forward_hook(keep_output) for block in blocks]
    try:
        with torch.enable_grad():
            embeds = embed(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=embeds, use_cache=False).logits
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                ids[:, 1:].flatten().to(logits.device),
                reduction="sum",
            )
            return list(torch.autograd.grad(loss, outputs))
    finally:
        for handle in handles:
            handle.remove()


def output_sensitivities(
    model: nn.Module,
    blocks: nn.ModuleList,
    batches: list[torch.Tensor],
    keep: Callable[[torch.Tensor], torch.Tensor],
) -> list[Stream]:
    """Per block, per calibration batch: ``g²`` of the dense model's LM loss with respect to
    the block's output, scaled so that its mean over all of the block's elements (over all
    data-parallel ranks) is 1; stored with ``keep`` (the activation store)."""
    hidden = model.get_input_embeddings().embedding_dim
    per_block: list[Stream] = [[] for _ in blocks]
    for batch in batches:
        rows: list[list[torch.Tensor]] = [[] for _ in blocks]
        for row in batch.split(1):
            for i, grad in enumerate(_sequence_gradients(model, blocks, row)):
                rows[i].append(grad.float().pow(2))
        for i in range(len(blocks)):
            empty = batch.new_zeros((0, batch.shape[1], hidden), dtype=torch.float32)
            per_block[i].append(torch.cat(rows[i]) if rows[i] else empty)
    sums = distributed.sum_floats([float(sum(t.sum() for t in s)) for s in per_block])
    count = distributed.sum_floats([float(sum(t.numel() for t in per_block[0]))])[0]
    return [
        [keep(t * (count / max(total, 1e-30))) for t in stream]
        for stream, total in zip(per_block, sums)
    ]
