"""The work folder of an unfinished pruning run: every file it holds, who writes, what resume reads.

After block ``i`` it holds, each file written atomically:

    block-{j}-step-{i}.safetensors  state of every block the step changed (CR changes two)
    streams-step-{i}.safetensors    activation streams entering block i + 1 (and i, for CR)
    masks-step-{i}.safetensors      keep-masks of the layers a later step may still train
    state.json                      {"next_block": i + 1, files of the step, outcome so far,
                                     the recipe it belongs to}

and, from before the first block, ``selfgen.jsonl``: the texts ``--self-gen N`` generated, which
``--resume`` reuses and the output ships, with ``selfgen-stats.json``, what generating them took.

state.json is written last and names the files of its step, so an interrupted write leaves the
previous step intact. Tensors are stored with safetensors, never pickled. The main process
(rank 0) alone writes here; checkpoints are made by one process only (under ``--distributed``
each rank holds only its slice of every batch), so a distributed run does not resume.
``--resume`` reads state.json and the files it names, and refuses a checkpoint whose recipe
differs from the run's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from compress.algorithms import distributed
from compress.core.errors import BadInputError
from compress.core.io import atomic_file, write_json_atomic

STATE = "state.json"
SELFGEN = "selfgen.jsonl"
SELFGEN_STATS = "selfgen-stats.json"

Checkpoint = tuple[dict, dict[int, dict[str, torch.Tensor]], dict[str, torch.Tensor], dict]


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)


class WorkFolder:
    """The folder (see :func:`compress.core.io.work_folder`) a run checkpoints into."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def selfgen(self) -> Path:
        """The self-generated calibration texts of the run."""
        return self.path / SELFGEN

    @property
    def selfgen_stats(self) -> Path:
        """What generating them took (counts, seconds), summed over a resumed run's attempts."""
        return self.path / SELFGEN_STATS

    @staticmethod
    def writes() -> bool:
        """Whether this process writes the folder: the main process (rank 0) only."""
        return distributed.is_main()

    @staticmethod
    def checkpoints() -> bool:
        """Whether this run checkpoints: in one process only (ranks hold slices of batches)."""
        return distributed.world_size() == 1

    def start(self, resume: bool, log: Callable[[str], None]) -> None:
        """Clear an unfinished run's folder unless it is to be resumed; say so when
        ``--resume`` finds no checkpoint to continue."""
        if resume and self.read_state() is None:
            log(f"--resume: no checkpoint in {self.path}; starting from block 0")
        if self.path.exists() and not resume and self.writes():
            log(
                f"starting over: removing the unfinished run in {self.path} (pass --resume to continue it)"
            )
            shutil.rmtree(self.path)

    def remove(self) -> None:
        """Drop the folder once the output is published."""
        shutil.rmtree(self.path, ignore_errors=True)

    def save_step(
        self,
        step: int,
        blocks: dict[int, dict[str, torch.Tensor]],
        streams: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        outcome: dict,
        recipe: dict,
    ) -> None:
        """Checkpoint the state after block ``step``; then drop the files of older steps."""
        work = self.path
        work.mkdir(parents=True, exist_ok=True)
        previous = self.read_state()
        block_files = dict(previous["block_files"]) if previous else {}
        for index, state in blocks.items():
            name = f"block-{index}-step-{step}.safetensors"
            _save_tensors(work / name, state)
            block_files[str(index)] = name
        _save_tensors(work / f"streams-step-{step}.safetensors", streams)
        _save_tensors(
            work / f"masks-step-{step}.safetensors",
            {k: v.to(torch.uint8) for k, v in masks.items()},
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
        keep = set(block_files.values()) | {
            state["streams"],
            state["masks"],
            STATE,
            SELFGEN,
            SELFGEN_STATS,
        }
        for path in work.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def read_state(self) -> dict | None:
        path = self.path / STATE
        return json.loads(path.read_text()) if path.is_file() else None

    def load_step(self, recipe: dict) -> Checkpoint | None:
        """The last checkpoint: (state, block states, streams, masks), or None when there is none.

        Raises:
            BadInputError: the checkpoint was made with other settings.
        """
        state = self.read_state()
        if state is None:
            return None
        if state["recipe"] != recipe:
            raise BadInputError(
                f"the partial run in {self.path} used different settings; rerun with the same "
                "flags, or without --resume to start over"
            )
        work = self.path
        blocks = {int(i): load_file(work / name) for i, name in state["block_files"].items()}
        streams = load_file(work / state["streams"])
        masks = {k: v.bool() for k, v in load_file(work / state["masks"]).items()}
        return state, blocks, streams, masks
