"""Device maps: the ``--device-map``/``--max-memory``/``--offload-folder`` flags, resolving a
map on an empty copy of the model, loading or dispatching with it (see :mod:`compress.model.placement`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.core.errors import BadInputError
from compress.model.blocks import BlockAdapter
from compress.model.compat import no_split_modules
from compress.model.plan import BlockShape, Workload, weights_budget, working_set_bytes

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
    """Where to put a model: an accelerate device map, a memory budget, an offload folder.

    With ``workload``, ``max_memory["cpu"]`` bounds the whole process: accelerate places weights
    in what is left of it once the run's working set is set aside (:func:`cpu_budget`)."""

    device_map: str | DeviceMap = "auto"
    max_memory: dict[int | str, int] | None = None
    offload_folder: str | None = None
    workload: Workload | None = None

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
        cls,
        device_map: str | None,
        max_memory: str | None,
        offload_folder: str | None,
        workload: Workload | None = None,
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
            workload,
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
        no_split = no_split_modules(model)
        budget = cpu_budget(model, placement, dtype)
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


def block_shape(model: nn.Module, dtype: torch.dtype) -> BlockShape:
    """The largest decoder block of ``model`` (real or on ``meta``) in ``dtype``."""
    blocks = BlockAdapter(model).blocks
    itemsize = torch.finfo(dtype).bits // 8
    matrices = [[p for p in block.parameters() if p.dim() == 2] for block in blocks]
    config = model.config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim", None)
    return BlockShape(
        bytes=max(sum(p.numel() for p in block.parameters()) for block in blocks) * itemsize,
        largest_layer=max(p.numel() for layers in matrices for p in layers),
        columns_squared=max(sum(p.shape[1] ** 2 for p in layers) for layers in matrices),
        hidden=hidden,
        inner=inner or 4 * hidden,
    )


def cpu_budget(
    model: nn.Module, placement: Placement, dtype: torch.dtype
) -> dict[int | str, int] | None:
    """``placement.max_memory`` with its ``cpu`` entry lowered by the run's working set, so
    that the process (weights placed in RAM and working set) stays within it.

    Raises:
        BadInputError: the bound cannot hold even the working set.
    """
    budget = placement.max_memory
    if budget is None or "cpu" not in budget or placement.workload is None:
        return budget
    working = working_set_bytes(block_shape(model, dtype), placement.workload)
    return {**budget, "cpu": weights_budget(budget["cpu"], working)}


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
