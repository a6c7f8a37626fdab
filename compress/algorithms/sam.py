"""Sharpness-aware minimization (SAM) and adaptive SAM (ASAM), mask-aware.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization"
(arXiv:2010.01412); Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization" (arXiv:2102.11600).
SAM minimises ``max_{||ε||₂ ≤ ρ} L(w + ε)``; one step is

1. ``g = ∇L(w)`` on the batch;
2. ``ε = ρ g / ||g||₂`` (ASAM: ``ε = ρ T² g / ||T g||₂`` with ``T = |w| + η``);
3. ``g' = ∇L(w + ε)`` on the same batch;
4. restore ``w`` and let the base optimizer step with ``g'``.

Symbols: ``ρ`` = ``rho``, ``η`` = ``eta``, ``T`` = the ASAM scaling, ``ε`` = ``e_w``. ``ρ``, ASAM
on/off and ``η`` may differ per parameter group; ``||·||`` is one norm over all groups.

ASAM scales weights only, as the official ASAM code does (it applies ``T`` to parameters whose
name contains ``weight``): biases keep ``T = 1``. Parameters passed with names
(``model.named_parameters()``) follow that rule exactly; unnamed parameters are scaled when they
have two or more dimensions, so 1-D ones (biases, but also norm gains) get ``T = 1``.

Sparse models: pruned weights are zero but still receive gradients. With ``masks`` (parameter ->
bool keep-mask) the gradient is masked before the norm and before the descent, and the weights
are re-masked after the base step, so the set of zeros never changes.

Gradient accumulation: :func:`accumulated_step` computes ``ε`` from the gradient of the whole
accumulated batch, then redoes the forward/backward at ``w + ε`` for every micro-batch with its
own targets; the result equals SAM on the full batch. Distributed: with ``global_epsilon`` the
gradients are averaged across processes before the norm (one ``ε`` for all replicas); run the
first backward under DDP's ``no_sync()`` to avoid reducing twice, or pass
``global_epsilon=False`` for per-replica (m-sharpness) SAM. Mixed precision: use bf16 autocast
with fp32 parameters; fp16 with a GradScaler is not supported (the ascent needs unscaled
gradients). Learning-rate schedulers attach to ``base_optimizer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist

TINY = 1e-12  # keeps ε finite when the gradient is exactly zero
Masks = Mapping[torch.nn.Parameter, torch.Tensor]


@torch.no_grad()
def mask_gradients(masks: Masks) -> None:
    """Zero the gradient of every pruned entry."""
    for p, mask in masks.items():
        if p.grad is not None:
            p.grad.masked_fill_(~mask, 0)


@torch.no_grad()
def mask_weights(masks: Masks) -> None:
    """Zero every pruned weight."""
    for p, mask in masks.items():
        p.masked_fill_(~mask, 0)


class SAM(torch.optim.Optimizer):
    """Wraps a base optimizer class; ``step(closure)`` runs both SAM passes.

    Args:
        params: parameters, named parameters or parameter groups (groups may set ``rho``,
            ``adaptive``, ``eta``); names tell ASAM which parameters are biases.
        base_optimizer: a ``torch.optim.Optimizer`` class, e.g. ``torch.optim.AdamW``.
        rho: radius ``ρ`` of the neighbourhood.
        adaptive: ASAM (scale-invariant ``ε`` with ``T = |w| + η``).
        eta: ASAM's ``η``.
        masks: parameter -> bool keep-mask shaped like it; masked entries stay exactly zero.
        global_epsilon: average gradients across torch.distributed processes before the norm.
        **kwargs: passed to ``base_optimizer`` (lr, weight_decay, ...).
    """

    def __init__(
        self,
        params: Iterable,
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        masks: Masks | None = None,
        global_epsilon: bool = True,
        **kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, eta=eta, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.global_epsilon = global_epsilon
        self.masks = dict(masks or {})
        for p, mask in self.masks.items():
            if mask.dtype != torch.bool or mask.shape != p.shape:
                raise ValueError(
                    f"mask must be a bool tensor shaped {tuple(p.shape)}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )

    def _named_params_with_grad(self) -> Iterable[tuple[dict, str | None, torch.Tensor]]:
        """(group, name or None, parameter) for every parameter holding a gradient."""
        for group in self.param_groups:
            names = group.get("param_names") or [None] * len(group["params"])
            for name, p in zip(names, group["params"], strict=True):
                if p.grad is not None:
                    yield group, name, p

    @torch.no_grad()
    def _all_reduce_gradients(self) -> None:
        """Average gradients over processes, one flat buffer per dtype."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for _, _, p in self._named_params_with_grad():
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(part.view_as(g))

    @staticmethod
    def _scaling(group: dict, name: str | None, p: torch.Tensor) -> torch.Tensor | float:
        """ASAM's ``T = |w| + η`` for weights; 1 for biases and for plain SAM."""
        if not group["adaptive"]:
            return 1.0
        is_weight = "weight" in name if name is not None else p.ndim >= 2
        return p.abs() + group["eta"] if is_weight else 1.0

    def _grad_norm(self) -> torch.Tensor:
        """``||T g||₂`` over every parameter with a gradient, in float32."""
        norms = [
            (self._scaling(group, name, p) * p.grad.float()).norm()
            for group, name, p in self._named_params_with_grad()
        ]
        if not norms:
            return torch.zeros(())
        return torch.stack([n.to(norms[0].device) for n in norms]).norm()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the worst point ``w + ε`` of the ρ-ball, from the gradients at ``w``."""
        mask_gradients(self.masks)
        if self.global_epsilon:
            self._all_reduce_gradients()
        grad_norm = self._grad_norm()
        for group, name, p in self._named_params_with_grad():
            scale = group["rho"] / (grad_norm.to(p.device) + TINY)
            t = self._scaling(group, name, p)
            e_w = (t * t * p.grad.float() * scale).to(p.dtype)
            self.state[p]["old_p"] = p.detach().clone()
            p.add_(e_w)  # w -> w + e(w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and take the base step with the gradients at ``w + ε``."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)  # w + e(w) -> w, exactly (no rounding from subtracting ε)
        mask_gradients(self.masks)
        self.base_optimizer.step()
        mask_weights(self.masks)
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """One SAM step; ``closure`` runs forward and backward and returns the loss.

        Gradients are cleared before each pass, so the closure need not call ``zero_grad``.
        Returns the loss at ``w`` (the first pass).
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that runs forward and backward")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        """The base optimizer's state (``old_p`` lives only inside a step)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


def accumulated_step(
    optimizer: SAM, micro_losses: Sequence[Callable[[], torch.Tensor]]
) -> torch.Tensor:
    """One SAM step over several micro-batches (gradient accumulation).

    Each callable computes one micro-batch loss, already weighted so that their sum is the loss
    of the full batch (e.g. ``mean_loss / len(micro_losses)`` for equal micro-batches); this
    function calls ``backward`` on it. Pass 1 accumulates ``∇L(w)`` over all micro-batches and
    takes ``ε`` from it; pass 2 redoes every micro-batch at ``w + ε``, accumulating ``∇L(w + ε)``.

    Returns:
        The full-batch loss at ``w`` (detached).
    """
    optimizer.zero_grad()
    total = torch.zeros(())
    with torch.enable_grad():
        for micro_loss in micro_losses:
            loss = micro_loss()
            loss.backward()
            total = total + loss.detach().float().cpu()
        optimizer.first_step(zero_grad=True)
        for micro_loss in micro_losses:
            micro_loss().backward()
    optimizer.second_step(zero_grad=True)
    return total
