"""Block adapter: where a model keeps its decoder blocks, and how to run one block alone.

Differences between families are one declarative line each (the attribute path of the block
list). Everything else is captured from the model itself: a forward pre-hook on the blocks
records the positional and keyword arguments the model passes them (attention masks, rotary
embeddings, cache positions), so masks and positions come from the library's own code and stay
right across families and library versions.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.core.errors import BadInputError
from compress.model.moe import is_fused_experts

BLOCK_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "phi": "model.layers",
    "phi3": "model.layers",
    "opt": "model.decoder.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}
SUPPORTED_MODEL_TYPES = frozenset(BLOCK_PATHS)

# Sibling layers: Linears of a block that read the very same input tensor, so they can share
# one set of calibration statistics (names relative to the block; ``*`` stands for the same
# segment in every member, e.g. one expert). Fused projections (GPT-2's c_attn, Phi-3's
# qkv_proj) have no siblings. tests/compress/test_siblings.py checks every entry against the
# input tensors the layers actually receive.
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
SIBLINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "llama": (_QKV, _GATE_UP),
    "mistral": (_QKV, _GATE_UP),
    "mixtral": (  # transformers 4.57's experts; 5's, unfused by compress.model.moe
        _QKV,
        ("block_sparse_moe.experts.*.w1", "block_sparse_moe.experts.*.w3"),
        ("mlp.experts.*.gate_proj", "mlp.experts.*.up_proj"),
    ),
    "qwen2": (_QKV, _GATE_UP),
    "qwen3": (_QKV, _GATE_UP),
    "gemma": (_QKV, _GATE_UP),
    "gemma2": (_QKV, _GATE_UP),
    "gemma3_text": (_QKV, _GATE_UP),
    "phi": ((*_QKV, "mlp.fc1"),),  # parallel attention and MLP read one layer norm
    "phi3": (),
    "opt": (_QKV,),
    "gpt2": (),
    "gpt_neox": (),
}


class _StopForward(Exception):
    """Raised by a capture hook once the needed block inputs are recorded."""


def move(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor inside (tuples, lists, dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(move(item, device) for item in obj)
    if isinstance(obj, dict):
        return {key: move(value, device) for key, value in obj.items()}
    return obj


@dataclass
class BlockCall:
    """Everything but the hidden states that the model passes to one block."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def is_prunable(module: nn.Module) -> bool:
    """A Linear, or GPT-2's Conv1D (a Linear with its weight stored transposed)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def weight_view(module: nn.Module) -> torch.Tensor:
    """The module's weight as ``(out_features, in_features)``, sharing storage."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.t()


class BlockAdapter:
    """Access to the decoder blocks of a supported causal LM."""

    def __init__(self, model: nn.Module) -> None:
        model_type = model.config.model_type
        if model_type not in BLOCK_PATHS:
            raise ValueError(f"unsupported model_type {model_type!r}")
        self.model = model
        self.blocks_path = BLOCK_PATHS[model_type]
        self.blocks: nn.ModuleList = model.get_submodule(self.blocks_path)

    def __len__(self) -> int:
        return len(self.blocks)

    def check_prunable(self) -> None:
        """Refuse blocks that keep layer weights outside prunable modules.

        transformers 5 stores MoE experts (Mixtral) as one ``(experts, out, in)`` tensor per
        projection instead of a Linear per expert; compress prunes Linear layers, so experts
        it cannot unfuse (:func:`compress.model.moe.unfused_experts`) would silently stay dense.

        Raises:
            BadInputError: a block parameter has more than two dimensions, outside an experts
                module that :func:`compress.model.moe.is_fused_experts` accepts.
        """
        unfusable = {
            id(p) for m in self.blocks[0].modules() if is_fused_experts(m) for p in m.parameters()
        }
        fused = [
            (n, p.ndim)
            for n, p in self.blocks[0].named_parameters()
            if p.ndim > 2 and id(p) not in unfusable
        ]
        if fused:
            import transformers

            (name, ndim), model_type = fused[0], self.model.config.model_type
            raise BadInputError(
                f"{model_type} under transformers {transformers.__version__} stores "
                f"{self.block_name(0)}.{name} as one {ndim}-D tensor for all experts; compress "
                "prunes Linear layers, so the experts would stay dense: prune it with "
                "transformers 4.57 (pip install 'transformers>=4.57,<4.58')"
            )

    def block_name(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    def prunable_layers(self, index: int, skip: Iterable[str] = ()) -> dict[str, nn.Module]:
        """Qualified name -> prunable module of block ``index``, minus names matching ``skip``."""
        prefix = self.block_name(index)
        skip = list(skip)
        return {
            f"{prefix}.{name}": module
            for name, module in self.blocks[index].named_modules()
            if is_prunable(module)
            and not any(fnmatch.fnmatchcase(f"{prefix}.{name}", pattern) for pattern in skip)
        }

    def sibling_groups(self, index: int, names: Iterable[str]) -> list[list[str]]:
        """``names`` (qualified layers of block ``index``) grouped by the input they read:
        declared siblings (:data:`SIBLINGS`) together, in the order given, every other layer
        alone. The first member of a group is the one whose statistics the others share."""
        prefix = self.block_name(index) + "."
        declared = [
            (re.compile(re.escape(prefix + pattern).replace(r"\*", r"([^.]+)")), g)
            for g, group in enumerate(SIBLINGS[self.model.config.model_type])
            for pattern in group
        ]
        groups: dict[object, list[str]] = {}
        for name in names:
            key: object = name
            for regex, g in declared:
                found = regex.fullmatch(name)
                if found:
                    key = (g, found.groups())
                    break
            groups.setdefault(key, []).append(name)
        return list(groups.values())

    @torch.no_grad()
    def capture(
        self, batches: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[list[BlockCall]]]:
        """Run the embeddings on each batch of token ids and record what reaches the blocks.

        Returns the hidden states entering block 0 (one tensor per batch) and, per batch, the
        :class:`BlockCall` of every block. Only the first batch of each shape goes past block 0
        (to see the call of every block), and even it computes block 0 only: the later blocks
        pass their input through while recording (:meth:`_passing_through`), since what the
        model hands a block does not depend on the hidden states it gets.
        """
        hidden: list[torch.Tensor] = []
        calls: list[list[BlockCall]] = []
        seen: dict[tuple[int, ...], list[BlockCall]] = {}
        recorded: list[BlockCall] = []

        def record(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                if args:
                    state, rest = args[0], args[1:]
                else:
                    kwargs = dict(kwargs)
                    state, rest = kwargs.pop("hidden_states"), ()
                if index == 0:
                    hidden.append(state.detach())
                recorded.append(BlockCall(rest, {k: v for k, v in kwargs.items()}))
                if index == len(self.blocks) - 1 or stop_at_first:
                    raise _StopForward

            return hook

        handles = [
            b.register_forward_pre_hook(record(i), with_kwargs=True)
            for i, b in enumerate(self.blocks)
        ]
        device = self.model.get_input_embeddings().weight.device
        try:
            with self._passing_through():
                for ids in batches:
                    shape = tuple(ids.shape)
                    stop_at_first = shape in seen
                    recorded = []
                    try:
                        self.model(input_ids=ids.to(device), use_cache=False)
                    except _StopForward:
                        pass
                    if shape not in seen:
                        seen[shape] = recorded
                    calls.append(seen[shape])
        finally:
            for handle in handles:
                handle.remove()
        return hidden, calls

    @contextmanager
    def _passing_through(self) -> Iterator[None]:
        """Blocks 1.. return their input unchanged, in the structure block 0 really returned
        (a tensor, or a tuple led by it); their own ``forward`` (an accelerate hook's too) is
        put back on leaving."""
        returned: list[Any] = []

        def passthrough(*args: Any, **kwargs: Any) -> Any:
            state = args[0] if args else kwargs["hidden_states"]
            out = returned[0]
            return (state, *out[1:]) if isinstance(out, tuple) else state

        def keep_structure(module: nn.Module, args: tuple, out: Any) -> None:
            returned[:] = [out]

        handle = self.blocks[0].register_forward_hook(keep_structure)
        saved = {i: b.__dict__.get("forward") for i, b in enumerate(self.blocks) if i}
        for i in saved:
            self.blocks[i].forward = passthrough
        try:
            yield
        finally:
            handle.remove()
            for i, original in saved.items():
                if original is None:
                    del self.blocks[i].forward
                else:
                    self.blocks[i].forward = original

    def run_block(self, index: int, hidden: torch.Tensor, call: BlockCall) -> torch.Tensor:
        """Block ``index`` applied to ``hidden`` with the recorded call, on the block's device."""
        block = self.blocks[index]
        device = next(block.parameters()).device
        out = block(hidden.to(device), *move(call.args, device), **move(call.kwargs, device))
        return out[0] if isinstance(out, tuple) else out
