"""Where the weights live: accelerate device maps, offload, sequential onloading, peak memory.

Three jobs, one idea (placing a model that may not fit one device):

- ``--device-map {auto,balanced,balanced_low_0,sequential,JSON}`` and ``--max-memory
  "0=20GiB,1=20GiB,cpu=64GiB"`` are parsed into a :class:`Placement`; the device map is resolved
  on an empty (meta) copy of the model with accelerate, so a map that needs disk offload without
  ``--offload-folder`` fails before any weight is read, then the model is loaded (or an
  in-memory model dispatched) with that explicit map.
- :func:`onloaded` moves one block (or a window of blocks) to the accelerator for its turn and
  back afterwards. Blocks that accelerate offloaded (parameters on ``meta``, values in the
  hook's ``weights_map`` on CPU or disk) are materialized, their hooks told to run on the
  accelerator without offloading, and the updated (pruned, reconstructed) values are written
  back to the CPU map or the disk files when the block's turn ends.
- :func:`measure_peak` records ``torch.cuda.max_memory_allocated`` for one block's turn.

Pruning needs the dense weights, so 8-/4-bit loading is refused (:func:`refuse_quantized`).
"""

from __future__ import annotations

import json
import re
import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.core.errors import BadInputError

PRESETS = ("auto", "balanced", "balanced_low_0", "sequential")
UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_CUDA = re.compile(r"^cuda:(\d+)$")

DeviceMap = dict[str, int | str]


# -- flags ------------------------------------------------------------------------------------
def parse_device_map(text: str) -> str | DeviceMap:
    """A preset name, or a JSON object (inline or a ``.json`` file) module name -> device.

    Devices in a JSON map: a GPU index (``0``), ``"cuda:N"``, ``"cpu"`` or ``"disk"``.
    """
    text = text.strip()
    if text in PRESETS:
        return text
    raw = text
    if not text.startswith("{"):
        path = Path(text)
        if path.suffix != ".json" or not path.is_file():
            raise BadInputError(
                f"--device-map {text!r}: use {', '.join(PRESETS)}, a JSON object such as "
                '\'{"model.layers.0": 0, "lm_head": "cpu"}\', or an existing .json file'
            )
        raw = path.read_text()
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--device-map is not valid JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(mapping, dict) or not mapping:
        raise BadInputError("--device-map JSON must be a non-empty object: module name -> device")
    for name, device in mapping.items():
        ok = isinstance(device, int) and not isinstance(device, bool) and device >= 0
        ok = ok or device in ("cpu", "disk") or bool(_CUDA.match(str(device)))
        if not ok:
            raise BadInputError(
                f"--device-map: device {device!r} of {name!r} is not a GPU index, "
                "'cuda:N', 'cpu' or 'disk'"
            )
    return mapping


def parse_size(text: str, where: str) -> int:
    """``"20GiB"``, ``"500MB"``, ``"1.5GiB"`` or plain bytes -> bytes."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "b").lower() if match else ""
    if not match or unit not in UNITS:
        raise BadInputError(
            f"{where}: size {text!r} is not understood; write e.g. 20GiB, 500MiB or 64GB"
        )
    return int(float(match.group(1)) * UNITS[unit])


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``"0=20GiB,1=20GiB,cpu=64GiB"`` -> ``{0: bytes, 1: bytes, "cpu": bytes}``."""
    budget: dict[int | str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, size = item.partition("=")
        key = key.strip()
        if not sep or not (key.isdigit() or key in ("cpu", "disk")):
            raise BadInputError(
                f"--max-memory {item!r}: write DEVICE=SIZE with DEVICE a GPU index, cpu or disk, "
                "e.g. '0=20GiB,cpu=64GiB'"
            )
        budget[int(key) if key.isdigit() else key] = parse_size(size, f"--max-memory {key}")
    if not budget:
        raise BadInputError("--max-memory is empty; write e.g. '0=20GiB,cpu=64GiB'")
    return budget


def _gpu_index(device: int | str) -> int | None:
    if isinstance(device, int):
        return device
    match = _CUDA.match(str(device))
    return int(match.group(1)) if match else None


@dataclass
class Placement:
    """Where to put a model: an accelerate device map, a memory budget, an offload folder."""

    device_map: str | DeviceMap = "auto"
    max_memory: dict[int | str, int] | None = None
    offload_folder: str | None = None

    def __post_init__(self) -> None:
        gpus = torch.cuda.device_count()
        named = list(self.max_memory or {})
        if isinstance(self.device_map, dict):
            named += list(self.device_map.values())
        for device in named:
            index = _gpu_index(device)
            if index is not None and index >= gpus:
                raise BadInputError(
                    f"GPU {index} is named in --device-map/--max-memory but only {gpus} "
                    "GPU(s) are visible"
                )

    @classmethod
    def from_flags(
        cls, device_map: str | None, max_memory: str | None, offload_folder: str | None
    ) -> Placement | None:
        """The placement the CLI flags ask for; None when none of them is given.

        Raises:
            BadInputError: a bad flag, or --max-memory/--offload-folder without --device-map.
        """
        if device_map is None:
            if max_memory or offload_folder:
                raise BadInputError(
                    "--max-memory and --offload-folder apply to a device map; add --device-map auto"
                )
            return None
        return cls(
            parse_device_map(device_map),
            parse_max_memory(max_memory) if max_memory else None,
            offload_folder,
        )


# -- resolving, loading, dispatching ----------------------------------------------------------
def resolve_device_map(model: nn.Module, placement: Placement, dtype: torch.dtype) -> DeviceMap:
    """An explicit map for ``model`` (real or on ``meta``), checked before any weight moves.

    Raises:
        BadInputError: the map misses modules, or it offloads to disk without an offload folder.
    """
    from accelerate.utils import check_device_map, get_balanced_memory, infer_auto_device_map

    if isinstance(placement.device_map, dict):
        device_map = dict(placement.device_map)
        try:
            check_device_map(model, device_map)
        except ValueError as exc:
            raise BadInputError(f"--device-map does not cover the model: {exc}") from exc
    else:
        no_split = model._get_no_split_modules("auto")
        budget = placement.max_memory
        if placement.device_map != "sequential":
            budget = get_balanced_memory(
                model,
                max_memory=budget,
                no_split_module_classes=no_split,
                dtype=dtype,
                low_zero=placement.device_map == "balanced_low_0",
            )
        device_map = infer_auto_device_map(
            model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype
        )
    if set(device_map.values()) == {"disk"}:
        raise BadInputError(
            "--max-memory leaves no room in memory for any module; raise its cpu= (or GPU) budget"
        )
    if "disk" in device_map.values() and not placement.offload_folder:
        raise BadInputError(
            "the device map offloads weights to disk; pass --offload-folder DIR "
            "(or a larger --max-memory)"
        )
    return device_map


def load_placed(
    folder: str,
    placement: Placement,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    **kwargs,
) -> nn.Module:
    """``from_pretrained(folder)`` placed as ``placement`` says, in eval mode.

    ``kwargs`` go to both ``from_config`` and ``from_pretrained`` sources unchanged (e.g.
    ``gguf_file``, ``use_safetensors``); the map is resolved on an empty copy first.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    gguf = {"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, **gguf)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    empty.tie_weights()
    device_map = resolve_device_map(empty, placement, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype,
        device_map=device_map,
        offload_folder=placement.offload_folder,
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    return model.eval()


def dispatch(model: nn.Module, placement: Placement) -> nn.Module:
    """Place an in-memory model with accelerate's ``dispatch_model`` (hooks move activations)."""
    from accelerate import dispatch_model

    dtype = next(model.parameters()).dtype
    device_map = resolve_device_map(model, placement, dtype)
    model.hf_device_map = device_map
    return dispatch_model(model, device_map, offload_dir=placement.offload_folder)


def refuse_quantized(load_in_8bit: bool = False, load_in_4bit: bool = False, config=None) -> None:
    """Refuse 8-/4-bit weights for pruning: scores, masks and updates need the dense weights.

    Raises:
        BadInputError: ``--load-in-8bit/--load-in-4bit`` given, or the checkpoint is quantized.
    """
    flag = "--load-in-8bit" if load_in_8bit else "--load-in-4bit" if load_in_4bit else None
    if flag:
        raise BadInputError(
            f"{flag} cannot be used for pruning: Wanda/SparseGPT scores and SparseGPT's update "
            "need the dense weights. Prune in bf16/fp16 (with --device-map for large models), "
            "then quantize the pruned folder with `compress export bnb`"
        )
    method = (getattr(config, "quantization_config", None) or {}).get("quant_method")
    if method:
        raise BadInputError(
            f"the checkpoint is quantized ({method}); pruning needs the dense weights: "
            "start from the unquantized model"
        )


# -- sequential onloading ---------------------------------------------------------------------
def _align_hooks(module: nn.Module) -> list:
    """The accelerate ``AlignDevicesHook`` objects attached to ``module`` (none when plain)."""
    from accelerate.hooks import AlignDevicesHook, SequentialHook

    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


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


# -- peak memory --------------------------------------------------------------------------------
@dataclass
class PeakMemory:
    """Filled when the :func:`measure_peak` block ends; None on a CPU."""

    bytes: int | None = None


@contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMemory]:
    """Peak ``torch.cuda.max_memory_allocated`` on ``device`` during the body (one block's turn)."""
    peak = PeakMemory()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peak
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            peak.bytes = torch.cuda.max_memory_allocated(device)


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``ru_maxrss`` is bytes on macOS, KiB on Linux."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
