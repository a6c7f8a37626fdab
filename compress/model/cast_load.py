"""Load a safetensors checkpoint in another float dtype with one copy of the weights in memory.

``from_pretrained(dtype=...)`` of a checkpoint stored in another dtype keeps every stored tensor
mapped while it builds the converted model, so its peak holds both (about three times the converted model's size,
against one here). Here each tensor is read, converted and its file mapping closed before the next one
(a mapping's pages count as resident until it is closed), and the converted state dict is
handed to ``from_pretrained``, which builds the model around it as usual (tied weights, buffers,
modules kept in float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
FLOATS = {"F64", "F32", "F16", "BF16"}
SAFETENSORS_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def checkpoint_files(folder: Path) -> list[Path]:
    """The folder's safetensors shards (its index's), or its single file; none: empty."""
    index = folder / INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / shard for shard in shards]
    return [folder / SINGLE] if (folder / SINGLE).is_file() else []


def _stored_float_dtypes(files: list[Path]) -> set[str]:
    """The safetensors dtype names (``F32``, ``BF16``...) of the checkpoint's float tensors."""
    names: set[str] = set()
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                dtype = handle.get_slice(key).get_dtype()
                if dtype in FLOATS:
                    names.add(dtype)
    return names


def needs_cast(folder: Path, dtype: torch.dtype) -> bool:
    """Whether the folder's safetensors hold float tensors of a dtype other than ``dtype``."""
    files = checkpoint_files(folder)
    return bool(files) and _stored_float_dtypes(files) - {SAFETENSORS_NAME.get(dtype)} != set()


def cast_state_dict(files: list[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of ``files``, floats in ``dtype``, read one at a time (see the module)."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as handle:
            keys = list(handle.keys())
        for key in keys:
            with safe_open(str(file), "pt") as handle:  # closed: its pages leave the RSS
                tensor = handle.get_tensor(key)
            state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


def load_cast(folder: Path, dtype: torch.dtype) -> nn.Module | None:
    """The causal LM of ``folder`` in ``dtype``, converted tensor by tensor; None where the
    architecture is not one transformers registers (remote code: load it the usual way)."""
    from transformers import AutoConfig, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(folder)
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        return None
    state = cast_state_dict(checkpoint_files(folder), dtype)
    model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=dtype)
    model.config._name_or_path = model.name_or_path = str(folder)  # as from_pretrained(folder)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model
