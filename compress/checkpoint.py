"""Per-block checkpoints of a pruning run, so a crash loses at most the block in progress.

After block ``i`` the work folder holds, each file written atomically:

    block-{j}-step-{i}.safetensors  state of every block the step changed (CR changes two)
    streams-step-{i}.safetensors    activation streams entering block i + 1 (and i, for CR)
    masks-step-{i}.safetensors      keep-masks of the layers a later step may still train
    state.json                      {"next_block": i + 1, files of the step, outcome so far,
                                     the recipe it belongs to}

and, from before the first block, ``selfgen.jsonl``: the texts ``--self-gen N`` generated, which
``--resume`` reuses and the output ships.

state.json is written last and names the files of its step, so an interrupted write leaves the
previous step intact. Tensors are stored with safetensors, never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from compress.core.errors import BadInputError
from compress.core.io import atomic_file, write_json_atomic

STATE = "state.json"
SELFGEN = "selfgen.jsonl"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)


def flatten_streams(streams: dict[str, list[torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    """``{"calib.sparse": [b0, b1]}`` -> ``{"calib.sparse.0": b0, "calib.sparse.1": b1}``."""
    flat = {}
    for name, batches in streams.items():
        for index, batch in enumerate(batches or []):
            flat[f"{name}.{index}"] = batch
    return flat


def unflatten_streams(flat: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    grouped: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in flat.items():
        name, index = key.rsplit(".", 1)
        grouped.setdefault(name, {})[int(index)] = tensor
    return {name: [parts[i] for i in sorted(parts)] for name, parts in grouped.items()}


def save_step(
    work: Path,
    step: int,
    blocks: dict[int, dict[str, torch.Tensor]],
    streams: dict[str, list[torch.Tensor] | None],
    masks: dict[str, torch.Tensor],
    outcome: dict,
    recipe: dict,
) -> None:
    """Checkpoint the state after block ``step``; then drop the files of older steps."""
    work.mkdir(parents=True, exist_ok=True)
    previous = read_state(work)
    block_files = dict(previous["block_files"]) if previous else {}
    for index, state in blocks.items():
        name = f"block-{index}-step-{step}.safetensors"
        _save_tensors(work / name, state)
        block_files[str(index)] = name
    _save_tensors(work / f"streams-step-{step}.safetensors", flatten_streams(streams))
    _save_tensors(
        work / f"masks-step-{step}.safetensors", {k: v.to(torch.uint8) for k, v in masks.items()}
    )
    state = {
        "next_block": step + 1,
        "block_files": block_files,
        "streams": f"streams-step-{step}.safetensors",
        "masks": f"masks-step-{step}.safetensors",
        "outcome": outcome,
        "recipe": recipe,
    }
    write_json_atomic(work / STATE, state)
    keep = set(block_files.values()) | {state["streams"], state["masks"], STATE, SELFGEN}
    for path in work.iterdir():
        if path.name not in keep and not path.name.startswith("."):
            path.unlink(missing_ok=True)


def read_state(work: Path) -> dict | None:
    path = work / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def load_step(work: Path, recipe: dict) -> tuple[dict, dict[int, dict], dict, dict] | None:
    """The last checkpoint: (state, block states, streams, masks), or None when there is none.

    Raises:
        BadInputError: the checkpoint was made with other settings.
    """
    state = read_state(work)
    if state is None:
        return None
    if state["recipe"] != recipe:
        raise BadInputError(
            f"the partial run in {work} used different settings; rerun with the same flags, "
            "or without --resume to start over"
        )
    blocks = {int(index): load_file(work / name) for index, name in state["block_files"].items()}
    streams = unflatten_streams(load_file(work / state["streams"]))
    masks = {k: v.bool() for k, v in load_file(work / state["masks"]).items()}
    return state, blocks, streams, masks
