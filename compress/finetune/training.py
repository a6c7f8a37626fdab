"""The pieces of one fine-tuning step: masks read from the model, optimizer, schedule,
autocast, held-out loss and the step itself."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from compress.algorithms.masks import masks_from_zeros, zero_count
from compress.algorithms.sam import SAM, accumulated_step, mask_gradients, mask_weights
from compress.finetune.config import FinetuneConfig, Optimizer, Precision


def sparsity_masks(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """Keep-masks (``weight != 0``) of the block Linear weights that hold exact zeros, and of
    fused MoE expert tensors (transformers 5; pruned as Linears, see :mod:`compress.model.moe`)."""
    from compress.model.blocks import BlockAdapter
    from compress.model.moe import is_fused_experts

    adapter = BlockAdapter(model)
    layers = [m for i in range(len(adapter)) for m in adapter.prunable_layers(i).values()]
    experts = [m for m in adapter.blocks.modules() if is_fused_experts(m)]
    fused = [p for m in experts for p in (m.gate_up_proj, m.down_proj)]
    return masks_from_zeros([*(m.weight for m in layers), *fused])


def count_zeros(masks: dict[nn.Parameter, torch.Tensor]) -> int:
    return sum(zero_count(p) for p in masks)


def build_optimizer(model: nn.Module, masks: dict, config: FinetuneConfig) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not config.uses_sam:
        params = [p for _, p in named]
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return SAM(
        named,  # names tell ASAM which parameters are biases (left unscaled)
        torch.optim.AdamW,
        rho=config.rho,
        adaptive=config.optimizer is Optimizer.asam_adamw,
        eta=config.eta,
        masks=masks,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )


def lr_lambda(config: FinetuneConfig) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine decay to zero at ``steps``."""

    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def resolve_autocast(config: FinetuneConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32)."""
    if config.precision is Precision.bf16:
        return torch.bfloat16
    if config.precision is Precision.auto and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None


@torch.no_grad()
def heldout_loss(model: nn.Module, ids: torch.Tensor, batch: int, autocast) -> float:
    """Mean token loss over the held-out windows (all windows have the same length)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for chunk in ids.split(batch):
        chunk = chunk.to(device)
        with autocast():
            total += float(model(input_ids=chunk, labels=chunk, use_cache=False).loss) * len(chunk)
    model.train(was_training)
    return total / len(ids)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    masks: dict,
    micro_batches: list[torch.Tensor],
    autocast,
) -> float:
    """One optimizer step over equal micro-batches; returns the mean loss at the start point."""

    def micro_loss(ids: torch.Tensor) -> torch.Tensor:
        with autocast():
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        return loss / len(micro_batches)

    if isinstance(optimizer, SAM):
        closures = [lambda ids=ids: micro_loss(ids) for ids in micro_batches]
        return float(accumulated_step(optimizer, closures))
    optimizer.zero_grad()
    total = 0.0
    for ids in micro_batches:
        loss = micro_loss(ids)
        loss.backward()
        total += float(loss.detach())
    mask_gradients(masks)
    optimizer.step()
    mask_weights(masks)
    return total
