"""Training the four CBM variants (Koh et al., ICML 2020, Sec. 3).

- IND: ``g`` on (x, c) with binary cross-entropy; ``f`` on (c, y) with cross-entropy, reading the
  *true* concepts. At test time ``f`` reads ``g``'s predictions.
- SEQ: ``g`` as in IND; then ``f`` on (σ(g(x)), y) with ``g`` frozen.
- JNT / JNT+P: both at once, ``L = L_y + λ·L_c`` (λ = ``concept_weight``, 0.01 in the papers);
  JNT feeds ``f`` the logits, JNT+P the probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from evaluators.cbm.config import TrainConfig
from evaluators.cbm.data.base import ConceptDataset, ConceptSplit
from evaluators.cbm.models import ConceptBottleneckModel, Variant


def fit(
    params: list[nn.Parameter],
    loss_fn: Callable[..., torch.Tensor],
    tensors: tuple[torch.Tensor, ...],
    cfg: TrainConfig,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """Minimise ``loss_fn(*batch)`` over shuffled minibatches; mean loss per epoch.

    The optimizer (Adam from ``cfg`` by default) is stepped with a closure, so SAM works too.
    """
    optimizer = optimizer or torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = tensors[0].shape[0]
    history = []
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for index in order.split(cfg.batch_size):
            batch = tuple(t[index] for t in tensors)

            def closure(batch: tuple[torch.Tensor, ...] = batch) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(*batch)
                loss.backward()
                return loss

            total += optimizer.step(closure).item() * index.numel()
        history.append(total / n)
    return history


def train_cbm(
    model: ConceptBottleneckModel, data: ConceptDataset, variant: Variant, cfg: TrainConfig
) -> dict[str, Any]:
    """Train ``model`` in place as ``variant``; return loss histories, seconds and metrics."""
    generator = torch.Generator().manual_seed(cfg.seed)
    train = data.train
    start = time.perf_counter()
    model.train()
    history: dict[str, list[float]] = {}
    if variant in (Variant.IND, Variant.SEQ):
        history["concept"] = fit(
            list(model.g.parameters()),
            lambda x, c: F.binary_cross_entropy_with_logits(model.g(x), c),
            (train.x, train.c),
            cfg,
            generator,
        )
        if variant is Variant.IND:
            f_inputs = train.c
        else:
            with torch.no_grad():
                f_inputs = torch.sigmoid(model.g(train.x))
        history["task"] = fit(
            list(model.f.parameters()),
            lambda c, y: F.cross_entropy(model.f(c), y),
            (f_inputs, train.y),
            cfg,
            generator,
        )
    else:

        def joint_loss(x: torch.Tensor, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = model.g(x)
            task = F.cross_entropy(model.f(model.bottleneck_values(logits)), y)
            return task + cfg.concept_weight * F.binary_cross_entropy_with_logits(logits, c)

        history["joint"] = fit(
            list(model.parameters()), joint_loss, (train.x, train.c, train.y), cfg, generator
        )
    model.eval()
    return {
        "history": history,
        "seconds": time.perf_counter() - start,
        "val": evaluate(model, data.val),
        "test": evaluate(model, data.test),
    }


def joint_loss(
    model: ConceptBottleneckModel, concept_weight: float
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``L_y + λ·L_c`` for one batch (JNT, JNT+P)."""

    def loss(x: torch.Tensor, c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model.g(x)
        task = F.cross_entropy(model.f(model.bottleneck_values(logits)), y)
        return task + concept_weight * F.binary_cross_entropy_with_logits(logits, c)

    return loss


def finetune_sam(
    model: ConceptBottleneckModel,
    data: ConceptDataset,
    variant: Variant,
    masks: dict[nn.Parameter, torch.Tensor],
    cfg: TrainConfig,
    rho: float = 0.05,
) -> list[float]:
    """Fine-tune a pruned model with SAM (:class:`compress.algorithms.sam.SAM`), keeping pruned weights 0.

    IND/SEQ fine-tune ``g`` on its concept loss (``f`` is left as trained); JNT/JNT+P fine-tune
    the whole model on the joint loss. Returns the mean loss per epoch.
    """
    from compress.algorithms.sam import SAM

    generator = torch.Generator().manual_seed(cfg.seed)
    train = data.train
    model.train()
    if variant in (Variant.IND, Variant.SEQ):
        params, tensors = list(model.g.parameters()), (train.x, train.c)

        def loss_fn(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(model.g(x), c)

    else:
        params, tensors = list(model.parameters()), (train.x, train.c, train.y)
        loss_fn = joint_loss(model, cfg.concept_weight)
    optimizer = SAM(
        params, torch.optim.Adam, rho=rho, masks=masks, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    history = fit(params, loss_fn, tensors, cfg, generator, optimizer)
    model.eval()
    return history


@torch.no_grad()
def evaluate(model: ConceptBottleneckModel, split: ConceptSplit) -> dict[str, float]:
    """Task error (soft concepts) and concept error (ĉ > 0.5 vs c) on one split."""
    if len(split) == 0:
        return {"task_error": float("nan"), "concept_error": float("nan")}
    logits = model.concept_logits(split.x)
    task = model.f(model.bottleneck_values(logits)).argmax(dim=1)
    return {
        "task_error": (task != split.y).float().mean().item(),
        "concept_error": ((logits > 0).float() != split.c).float().mean().item(),
    }
