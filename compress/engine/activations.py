"""The activation streams of a pruning run: where they live, in which dtype, and their state.

One :class:`Streams` per data set (calibration, held-out) holds the activations entering the
current block. The :class:`ActivationStore` decides where streams live (on the accelerator
when they fit, else on the CPU, pinned there next to a GPU so batches stream to it
asynchronously), stores batches there in the activations dtype, hands a batch back in the
model's dtype for a block to run on, takes this rank's slice of every batch under
``torch.distributed``, and turns the streams into named tensors for a checkpoint and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.algorithms import distributed
from compress.model.blocks import BlockAdapter, BlockCall

Stream = list[torch.Tensor]  # one activation tensor (B, T, H) per batch
SAVED = ("sparse", "dense", "prev_sparse", "prev_local")  # what a checkpoint keeps of Streams


@dataclass
class Streams:
    """The activations of one data set (calibration or held-out) entering the current block."""

    calls: list[list[BlockCall]]  # per batch, per block
    sparse: Stream  # through the pruned blocks
    dense: Stream | None = None  # through the dense model (GP targets, error measurement)
    prev_sparse: Stream | None = None  # entering block i - 1 (CR windows)
    prev_local: Stream | None = None  # BR target of block i - 1 (BR+CR windows)
    dense_out: Stream | None = None  # set during a step
    local: Stream | None = None
    cross: Stream | None = None


def activation_device(
    setting: str, accelerator: torch.device, home: torch.device, nbytes: int
) -> torch.device:
    """Where the activation streams live: on the accelerator when they fit in half of its free
    memory (``auto``), else on the CPU (pinned there when CUDA is present, so batches stream to
    the GPU asynchronously); ``home`` (the embeddings' device) without an accelerator."""
    if setting == "cpu":
        return torch.device("cpu")
    if accelerator.type != "cuda":
        return home
    if setting == "accelerator":
        return accelerator
    free, _ = torch.cuda.mem_get_info(accelerator)
    return accelerator if nbytes < free // 2 else torch.device("cpu")


class ActivationStore:
    """Placement, dtype and checkpoint state of a run's activation streams."""

    def __init__(
        self,
        setting: str,
        dtype: torch.dtype,
        model_dtype: torch.dtype,
        home: torch.device,
        accelerator: torch.device,
    ) -> None:
        """``setting``: ``--activations-device``; ``dtype``: the dtype streams are stored in;
        ``model_dtype``: the dtype blocks run in; ``home``: the embeddings' device."""
        self.setting = setting
        self.dtype = dtype
        self.model_dtype = model_dtype
        self.home = home
        self.accelerator = accelerator
        self.device = home  # decided by place()

    def place(self, tokens: int, hidden: int, streams: int) -> None:
        """Decide where ``streams`` streams of ``tokens`` tokens (over all ranks) of width
        ``hidden`` live; each rank holds its slice of every batch."""
        tokens //= distributed.world_size()
        nbytes = streams * tokens * hidden * torch.finfo(self.dtype).bits // 8
        self.device = activation_device(self.setting, self.accelerator, self.home, nbytes)

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        """One activation batch moved to the stream storage (pinned on CPU next to a GPU)."""
        x = x.to(device=self.device, dtype=self.dtype)
        return x.pin_memory() if self.device.type == "cpu" and torch.cuda.is_available() else x

    def store(self, batches: list[torch.Tensor]) -> Stream:
        return [self.keep(x) for x in batches]

    def onload(self, x: torch.Tensor) -> torch.Tensor:
        """A stored batch in the model's dtype (the block moves it to its own device)."""
        return x.to(self.model_dtype)

    def capture(
        self, adapter: BlockAdapter, ids: torch.Tensor, batch_size: int, dense: bool
    ) -> Streams:
        """The streams of ``ids`` entering block 0 (a dense copy too with ``dense``), batched as
        in one process; under ``torch.distributed`` this rank's slice of every batch
        (:func:`distributed.local_batches`), an empty slice standing as an empty activation that
        no block runs on."""
        batches = distributed.local_batches(ids, batch_size)
        full = [b for b, batch in enumerate(batches) if len(batch)]
        captured, captured_calls = adapter.capture([batches[b] for b in full])
        width = captured[0].shape[-1] if captured else adapter.model.config.hidden_size
        hidden = [ids.new_empty((0, ids.shape[1], width), dtype=self.model_dtype) for _ in batches]
        calls: list[list[BlockCall]] = [[] for _ in batches]
        for b, x, call in zip(full, captured, captured_calls):
            hidden[b], calls[b] = x, call
        hidden = self.store(hidden)
        return Streams(calls, hidden, [h.clone() for h in hidden] if dense else None)

    @staticmethod
    def state(sets: dict[str, Streams]) -> dict[str, torch.Tensor]:
        """The checkpointed streams as named tensors: ``{"calibration.sparse.0": batch 0, ...}``."""
        flat = {}
        for prefix, s in sets.items():
            for name in SAVED:
                for index, batch in enumerate(getattr(s, name) or []):
                    flat[f"{prefix}.{name}.{index}"] = batch
        return flat

    def restore(self, sets: dict[str, Streams], flat: dict[str, torch.Tensor]) -> None:
        """Put the streams of a checkpoint (:meth:`state`) back into ``sets``, stored here."""
        grouped: dict[str, dict[int, torch.Tensor]] = {}
        for key, tensor in flat.items():
            name, index = key.rsplit(".", 1)
            grouped.setdefault(name, {})[int(index)] = tensor
        for prefix, s in sets.items():
            for name in SAVED:
                parts = grouped.get(f"{prefix}.{name}")
                saved = None if parts is None else [parts[i] for i in sorted(parts)]
                setattr(s, name, None if saved is None else self.store(saved))
