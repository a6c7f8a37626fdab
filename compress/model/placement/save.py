"""Saving a placed model in one read of its weights: each tensor is checked for NaN/Inf and its
zeros counted as it is written, and a model whose weights wait in an offload store (CPU or disk)
is streamed into its safetensors files one tensor at a time.

``save_pretrained`` would read an offloaded model's store shard by shard (one 5 GB shard in
memory with transformers 4, the whole model with 5's 50 GB shards) and copy each shard once more
into bytes. Here the files are the ones ``save_pretrained`` writes for the same weights in
memory -- the same shards (``huggingface_hub``'s split at the installed transformers' default
size), the same index and the same bytes (safetensors' layout: a JSON header of every tensor's
dtype, shape and byte range, sorted by dtype width then name, padded to 8 bytes, then the data in
that order) -- but at most one offloaded tensor is in memory at a time.
"""

from __future__ import annotations

import inspect
import json
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress.algorithms.finite import refuse_non_finite
from compress.algorithms.masks import zero_count
from compress.model.placement.onload import holds_offloaded, offload_stores, stored_parameters

# safetensors' dtype names in the order its files store them (widest first)
DTYPE_NAMES = {
    torch.uint64: "U64",
    torch.int64: "I64",
    torch.float64: "F64",
    torch.float32: "F32",
    torch.uint32: "U32",
    torch.int32: "I32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.uint16: "U16",
    torch.int16: "I16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_RANK = {dtype: rank for rank, dtype in enumerate(DTYPE_NAMES)}
METADATA = {"format": "pt"}
INDEX_NAME = "model.safetensors.index.json"


@dataclass
class WeightTally:
    """Zeros over all parameters (tied ones once), counted while they are saved."""

    zeros: int = 0
    parameters: int = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s zeros, after refusing it if it holds NaN or Inf.

        Raises:
            NumericsError: naming the tensor (nothing is published: the caller's staging
                folder is dropped).
        """
        refuse_non_finite([(name, tensor)])
        self.zeros += zero_count(tensor)
        self.parameters += tensor.numel()

    @property
    def sparsity(self) -> float:
        return self.zeros / self.parameters


def save_model(model: nn.Module, folder: Path) -> WeightTally:
    """Write ``model``'s config and weights into ``folder`` as ``save_pretrained`` does, and
    return the zeros of its parameters; every parameter is read once (an offloaded one from its
    store) and refused if it holds NaN or Inf, before the weights in memory are written or as
    an offloaded model's are streamed.

    Raises:
        NumericsError: a parameter holds NaN or Inf (named).
    """
    tally = WeightTally()
    if not holds_offloaded([model]):
        for name, parameter in stored_parameters(model):
            tally.add(name, parameter)
        model.save_pretrained(folder, safe_serialization=True)
        return tally
    with warnings.catch_warnings():  # transformers 5 warns of the offload it is not asked to read
        warnings.filterwarnings("ignore", "Attempting to save a model with offloaded modules")
        model.save_pretrained(folder, state_dict={})  # config and generation config only
    _stream_weights(model, folder, tally)
    return tally


def _saved_entries(model: nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (the slot's tensor, a ``meta`` placeholder where offloaded; whether it is a
    parameter), in ``state_dict`` order, a tied tensor under its first name only (the one
    ``save_pretrained`` keeps)."""
    parameters = {id(p) for p in model.parameters()}
    entries: dict[str, tuple[torch.Tensor, bool]] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            entries[name] = (tensor, id(tensor) in parameters)
    return entries


def _stream_weights(model: nn.Module, folder: Path, tally: WeightTally) -> None:
    from huggingface_hub import split_torch_state_dict_into_shards

    entries = _saved_entries(model)
    placeholders = {name: t.detach().to("meta") for name, (t, _) in entries.items()}
    split = split_torch_state_dict_into_shards(
        placeholders,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=_shard_size(model),
    )
    stores = offload_stores(model)
    for filename, names in split.filename_to_tensors.items():
        layout = sorted(names, key=lambda n: (_RANK[placeholders[n].dtype], n))
        with open(folder / filename, "wb") as file:
            file.write(_header(layout, placeholders))
            for name, tensor in _values(layout, entries, stores):
                if entries[name][1]:
                    tally.add(name, tensor)
                file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": model.num_parameters(), **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        (folder / INDEX_NAME).write_text(text, encoding="utf-8")


def _values(layout: list[str], entries: dict, stores: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of ``layout`` with its values, an offloaded one read from its store."""
    for name in layout:
        tensor = entries[name][0]
        if tensor.device.type == "meta":
            weights_map, key = stores[name]
            tensor = weights_map[key]
        yield name, tensor.detach().to("cpu")


def _header(layout: list[str], placeholders: dict[str, torch.Tensor]) -> bytes:
    """safetensors' header of ``layout``: its length (8 bytes, little-endian), then the JSON."""
    header: dict[str, object] = {"__metadata__": METADATA}
    offset = 0
    for name in layout:
        tensor = placeholders[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _shard_size(model: nn.Module) -> int | str:
    """The shard size ``save_pretrained`` uses by default in the installed transformers."""
    return inspect.signature(model.save_pretrained).parameters["max_shard_size"].default
