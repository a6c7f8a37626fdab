"""Measure what :mod:`compress.model.plan` decides on: the weights' sizes and shape, free RAM, free
accelerator memory and free disk, for a model about to be downloaded or loaded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from compress.model.plan import ITEMSIZE, DiskNeed, Plan, check_disk, plan_memory

WEIGHT_SUFFIXES = (".safetensors", ".pth")


def weights_bytes(sizes: dict[str, int]) -> int:
    return sum(size for name, size in sizes.items() if name.endswith(WEIGHT_SUFFIXES))


def folder_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}


def shape(config_file: Path) -> tuple[int, int]:
    """(blocks, bytes per stored weight) from config.json or Meta's params.json (16-bit)."""
    config = json.loads(config_file.read_text())
    if config_file.name == "params.json":
        return config["n_layers"], 2
    blocks = config.get("num_hidden_layers") or config.get("n_layer") or 1
    stored = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return blocks, ITEMSIZE.get(stored.removeprefix("torch."), 4)


def float32_weights(folder: Path) -> int:
    """Bytes of a saved model folder's weights in float32 (the dtype an export computes in),
    from the stored files' sizes and the dtype config.json records."""
    stored = weights_bytes(folder_sizes(folder))
    _, itemsize = shape(folder / "config.json")
    return stored // itemsize * ITEMSIZE["float32"]


def free_ram() -> int:
    import psutil

    return psutil.virtual_memory().available


def free_disk(folder: Path) -> tuple[int, int]:
    """(free bytes, filesystem id) of the nearest existing folder at or above ``folder``."""
    folder = folder.absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free, os.stat(folder).st_dev


def memory(device: torch.device) -> tuple[int, int]:
    """(free bytes where the model runs, free RAM)."""
    ram = free_ram()
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], ram
    return ram, ram


def disk_need(what: str, size: int, folder: Path) -> DiskNeed:
    free, filesystem = free_disk(folder)
    return DiskNeed(what, size, str(folder), free, filesystem)


def preflight(
    sizes: dict[str, int],
    config_file: Path,
    dtype: str,
    device: torch.device,
    writes: list[tuple[str, Path]],
    output: str | None,
    offload: Path,
) -> Plan:
    """The plan for weights of ``sizes``; ``writes``: (what, folder) that receive a copy of the
    stored weights before loading (the download, a conversion); ``offload``: where weights wait
    when they must be onloaded block by block.

    Raises:
        BadInputError: the weights fit nowhere, or a disk lacks room.
    """
    stored = weights_bytes(sizes)
    blocks, itemsize = shape(config_file)
    parameters = stored // itemsize
    free, ram = memory(device)
    plan = plan_memory(parameters, blocks, dtype, device.type == "cuda", free, ram)
    needs = [disk_need(what, stored, folder) for what, folder in writes]
    if output is not None:  # the weights as saved, the tokenizer and the rest beside them
        beside = sum(sizes.values()) - stored
        needs.append(disk_need("output", plan.weights_bytes + beside, Path(output)))
    if plan.onload:
        needs.append(disk_need("offloaded weights", plan.weights_bytes, offload))
    check_disk(needs)
    return plan
