"""Fused MoE experts seen as one Linear per expert projection, for as long as a block is pruned.

transformers 5 keeps a Mixtral block's experts in one module with two 3-D parameters,
``gate_up_proj`` ``(E, 2I, H)`` (each expert's gate rows, then its up rows) and ``down_proj``
``(E, H, I)``. compress prunes Linear layers, so :func:`unfused_experts` puts in place of every
such module an :class:`UnfusedExperts` whose ``{e}.gate_proj``, ``{e}.up_proj`` and
``{e}.down_proj`` Linears hold views of the 3-D parameters' slices (pruning them writes into the
fused tensors) and whose forward is the library's eager loop, so that calibration hooks see each
expert's routed tokens. Leaving, the original modules go back, with every Linear's weight copied
into its slice: a no-op while the views hold, and what keeps the result when a dtype or device
move (block training, onloading) gave the Linears tensors of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def is_fused_experts(module: nn.Module) -> bool:
    """An experts module laid out as :class:`UnfusedExperts` reads it: ``gate_up_proj``
    ``(E, 2I, H)`` and ``down_proj`` ``(E, H, I)``, concatenated, untransposed, no biases."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    if not isinstance(gate_up, nn.Parameter) or not isinstance(down, nn.Parameter):
        return False
    if gate_up.ndim != 3 or down.ndim != 3 or not hasattr(module, "act_fn"):
        return False
    layout = (
        getattr(module, "is_concatenated", True)
        and not getattr(module, "is_transposed", False)
        and not getattr(module, "has_bias", False)
    )
    experts, inner = down.shape[0], down.shape[2]
    return bool(layout) and gate_up.shape == (experts, 2 * inner, down.shape[1])


def _view_linear(weight: torch.Tensor, requires_grad: bool) -> nn.Linear:
    """A bias-free Linear whose weight is ``weight`` itself (a view, no copy)."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=requires_grad)
    return linear


class Expert(nn.Module):
    """One expert: ``down(act(gate(x)) * up(x))``; trainable where the fused tensors are."""

    def __init__(
        self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, requires_grad: bool
    ) -> None:
        super().__init__()
        self.gate_proj = _view_linear(gate, requires_grad)
        self.up_proj = _view_linear(up, requires_grad)
        self.down_proj = _view_linear(down, requires_grad)


class UnfusedExperts(nn.Module):
    """``fused``'s experts as :class:`Expert` modules ``0, 1, ...`` over views of its
    parameters; called like ``fused`` (hidden states, top-k expert indices, top-k weights)."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        gate_up, down = fused.gate_up_proj.detach(), fused.down_proj.detach()
        inner, self.num_experts = down.shape[2], len(down)
        trains = fused.gate_up_proj.requires_grad
        for e in range(self.num_experts):
            expert = Expert(gate_up[e, :inner], gate_up[e, inner:], down[e], trains)
            self.add_module(str(e), expert)
        self.act_fn = fused.act_fn

    def expert(self, index: int) -> Expert:
        return self.get_submodule(str(index))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """transformers' eager experts loop, step for step (the same routed tokens, products
        and ``index_add_`` order), with the gate and up rows applied as two Linears."""
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            hit = torch.nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1)
            hit = hit.permute(2, 1, 0)
            experts = torch.greater(hit.sum(dim=(-1, -2)), 0).nonzero()
        for index in experts[:, 0].tolist():
            if index == self.num_experts:
                continue
            expert = self.expert(index)
            top_k_pos, token_idx = torch.where(hit[index])
            state = hidden_states[token_idx]
            state = self.act_fn(expert.gate_proj(state)) * expert.up_proj(state)
            state = expert.down_proj(state) * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, state.to(final.dtype))
        return final

    @torch.no_grad()
    def write_back(self, fused: nn.Module) -> None:
        """Every expert's weights into ``fused``'s slices (see the module docstring)."""
        inner = fused.down_proj.shape[2]
        for e in range(self.num_experts):
            expert = self.expert(e)
            _copy(fused.gate_up_proj[e, :inner], expert.gate_proj.weight)
            _copy(fused.gate_up_proj[e, inner:], expert.up_proj.weight)
            _copy(fused.down_proj[e], expert.down_proj.weight)


def _copy(target: torch.Tensor, weight: torch.Tensor) -> None:
    """``weight`` into ``target``, unless it still is ``target`` (the view held)."""
    if weight.data_ptr() != target.data_ptr() or weight.device != target.device:
        target.copy_(weight)


@contextmanager
def unfused_experts(roots: nn.Module | Iterable[nn.Module]) -> Iterator[None]:
    """Inside, every fused experts module under ``roots`` is an :class:`UnfusedExperts` at the
    same place; leaving (also on error), the originals are back, holding the weights.

    Enter it where the weights are real tensors (inside :func:`compress.model.placement.onloaded`:
    views of offloaded ``meta`` parameters would hold nothing), and leave it before saving
    state dicts, which then keep the library's fused names.
    """
    roots = [roots] if isinstance(roots, nn.Module) else list(roots)
    swapped: list[tuple[nn.Module, str, nn.Module, UnfusedExperts]] = []
    try:
        for root in roots:
            for name, module in list(root.named_modules()):
                if name and is_fused_experts(module):
                    parent_name, _, child = name.rpartition(".")
                    parent = root.get_submodule(parent_name)
                    unfused = UnfusedExperts(module)
                    setattr(parent, child, unfused)
                    swapped.append((parent, child, module, unfused))
        yield
    finally:
        for parent, child, fused, unfused in reversed(swapped):
            unfused.write_back(fused)
            setattr(parent, child, fused)
