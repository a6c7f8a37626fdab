"""Sequential onloading: one block (or window) on the accelerator for its turn, then back."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _align_hooks(module: nn.Module) -> list:
    """The accelerate ``AlignDevicesHook`` objects attached to ``module`` (none when plain)."""
    from accelerate.hooks import AlignDevicesHook, SequentialHook

    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def holds_offloaded(blocks: Iterable[nn.Module]) -> bool:
    """Whether any of ``blocks`` keeps weights that accelerate offloaded (to CPU or disk); ask
    before :func:`onloaded`, which lifts the offload for its body."""
    return any(
        hook.offload for block in blocks for m in block.modules() for hook in _align_hooks(m)
    )


def _tensor_slots(module: nn.Module, recurse: bool, buffers: bool):
    """``(owner, kind, name, qualified)`` of the parameters (and buffers) under ``module``."""
    owners = module.named_modules() if recurse else [("", module)]
    for prefix, owner in owners:
        kinds = ("_parameters", "_buffers") if buffers else ("_parameters",)
        for kind in kinds:
            for name, tensor in getattr(owner, kind).items():
                if tensor is not None:
                    yield owner, kind, name, f"{prefix}.{name}" if prefix else name


def _set(owner: nn.Module, kind: str, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in a tensor slot, keeping the ``Parameter`` object where torch allows
    (between real devices; not to or from ``meta``)."""
    old = getattr(owner, kind)[name]
    if kind == "_buffers":
        owner._buffers[name] = value
    elif torch._has_compatible_shallow_copy_type(old, value):
        old.data = value
    else:
        owner._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)


def _write_back(weights_map, key: str, value: torch.Tensor) -> None:
    """Store an updated offloaded tensor where accelerate reads it: CPU dict or disk file."""
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset, offload_weight

    dataset = weights_map
    if isinstance(weights_map, PrefixedDataset):
        dataset, key = weights_map.dataset, weights_map.prefix + key
    if isinstance(dataset, OffloadedWeightsLoader) and key not in dataset.state_dict:
        # Disk: overwrite (or, for a tensor read from the original checkpoint, create) the .dat
        # file in the offload folder; offload_weight also points the index at it.
        offload_weight(value, key, dataset.save_folder, dataset.index)
    elif isinstance(dataset, OffloadedWeightsLoader):
        dataset.state_dict[key] = value
    else:
        dataset[key] = value


def _onload_module(module: nn.Module, device: torch.device, undo: list[Callable[[], None]]) -> None:
    """Point ``module``'s accelerate hooks at ``device`` and materialize what they offloaded there;
    append the steps that reverse this to ``undo``."""
    for hook in _align_hooks(module):
        undo.append(_restorer(hook))
        hook.execution_device = device
        if hook.offload:
            hook.offload = False
            for owner, kind, name, key in _tensor_slots(
                module, hook.place_submodules, hook.offload_buffers
            ):
                stored = hook.weights_map[key]
                _set(owner, kind, name, stored.to(device))
                undo.append(_offload_back(hook, owner, kind, name, key, stored.dtype))


def _restorer(hook) -> Callable[[], None]:
    previous = (hook.execution_device, hook.offload)

    def restore() -> None:
        hook.execution_device, hook.offload = previous

    return restore


def _offload_back(hook, owner, kind, name, key, dtype) -> Callable[[], None]:
    def back() -> None:
        tensor = getattr(owner, kind)[name]
        _write_back(hook.weights_map, key, tensor.detach().to("cpu", dtype))
        _set(owner, kind, name, torch.empty_like(tensor, device="meta"))

    return back


@contextmanager
def onloaded(blocks: nn.Module | Iterable[nn.Module], device: torch.device | str) -> Iterator[None]:
    """Run the body with every tensor of ``blocks`` on ``device``, then put them back.

    Plain tensors return to the device they came from; tensors that accelerate offloaded (to
    CPU or disk) are written back to their offload store, with any change made in the body
    (pruning, reconstruction), and their parameters return to ``meta``. Hooks run on
    ``device`` meanwhile. Plain parameters keep their ``Parameter`` object; offloaded ones get
    a new one for the body (build pruners, masks and optimizers inside it).
    """
    device = torch.device(device)
    blocks = [blocks] if isinstance(blocks, nn.Module) else list(blocks)
    undo: list[Callable[[], None]] = []
    try:
        for block in blocks:
            for module in block.modules():
                _onload_module(module, device, undo)
            for owner, kind, name, _ in _tensor_slots(block, recurse=True, buffers=True):
                tensor = getattr(owner, kind)[name]
                if tensor.device.type != "meta" and tensor.device != device:
                    _set(owner, kind, name, tensor.to(device))
                    undo.append(_mover(owner, kind, name, tensor.device))
        yield
    finally:
        for step in reversed(undo):
            step()


def offload_stores(model: nn.Module) -> dict[str, tuple[object, str]]:
    """Where each tensor accelerate offloaded lives: qualified name -> (the hook's
    ``weights_map``, its key there); read ``weights_map[key]`` for the values."""
    stores: dict[str, tuple[object, str]] = {}
    for prefix, module in model.named_modules():
        for hook in _align_hooks(module):
            if hook.offload:
                slots = _tensor_slots(module, hook.place_submodules, hook.offload_buffers)
                for _, _, _, key in slots:
                    stores[f"{prefix}.{key}" if prefix else key] = (hook.weights_map, key)
    return stores


def stored_parameters(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of ``model`` (a tied one once) with its values, one at a time: a parameter
    accelerate offloaded (its slot holds a ``meta`` tensor) is read back from its offload store,
    memory-mapped on disk or held in CPU memory, so no more than one offloaded tensor is loaded."""
    stores = offload_stores(model)
    for name, parameter in model.named_parameters():
        if parameter.device.type == "meta" and name in stores:
            weights_map, key = stores[name]
            yield name, weights_map[key]
        else:
            yield name, parameter


def _mover(owner: nn.Module, kind: str, name: str, home: torch.device) -> Callable[[], None]:
    return lambda: _set(owner, kind, name, getattr(owner, kind)[name].to(home))


def execution_device(block: nn.Module, accelerator: torch.device) -> torch.device:
    """Where ``block`` should run: the GPU it lives on (or its hook runs on), else
    ``accelerator`` (weights waiting on CPU or disk are onloaded there)."""
    for module in block.modules():
        for hook in _align_hooks(module):
            if hook.execution_device is not None and torch.device(hook.execution_device).type in (
                "cuda",
                "xpu",
            ):
                return torch.device(hook.execution_device)
    for tensor in block.parameters():
        if tensor.device.type not in ("cpu", "meta"):
            return tensor.device
    return accelerator
