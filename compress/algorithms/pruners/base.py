"""The pruner contract: accumulate statistics per batch, then decide a mask.

A pruner sees one weight matrix ``(out_features, in_features)`` and the inputs that reach it; it
knows nothing about blocks, models or module types (the block adapter hands it a view of an
``nn.Linear`` weight, or the transpose of a GPT-2 ``Conv1D`` weight, sharing storage). The engine feeds it with :meth:`Pruner.add_batch` (one call per calibration batch), may
all-reduce :meth:`Pruner.statistics` across processes, then calls :meth:`Pruner.prune`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from compress.algorithms.distributed import ExactSum
from compress.algorithms.masks import SparsityPattern

# Choosing a mask, per weight, in forward-equivalent flops: a selection over the scores runs
# about as long as this many flops of a block's forward (matrix products) on the same machine.
MASK_FLOPS = 2000.0


@dataclass
class PruneResult:
    """What a pruner decided for one layer."""

    mask: torch.Tensor  # bool, weight-shaped, True = kept
    seconds: float
    scales: torch.Tensor | None = None  # quantized: float16 (out, groups) of its grid


class Pruner(ABC):
    """Base of all pruners. Subclasses set ``needs_data`` and implement the two verbs."""

    needs_data: bool = True
    shares: tuple[str, ...] = ()  # attributes holding the statistics (see :meth:`share`)
    gram_bytes: int = 0  # bytes its statistics hold per squared input column (0: a vector)
    options: type  # its options dataclass (compress/core/methods.py), set by :func:`register`

    def __init__(self, weight: torch.Tensor, name: str = "layer") -> None:
        self.weight = weight  # (out, in), shares storage with the module's parameter
        self.name = name
        self.nsamples = 0  # calibration tokens seen

    def add_batch(self, inp: torch.Tensor) -> None:
        """Accumulate statistics from one batch of the layer's inputs ``(..., in_features)``."""

    def share(self, leader: Pruner) -> None:
        """Use ``leader``'s statistics (a sibling layer reading the very same input): the engine
        then feeds, reduces and frees only the leader's, once for the whole group."""
        for attr in self.shares:
            setattr(self, attr, getattr(leader, attr))

    def statistics(self) -> list[ExactSum]:
        """Sums reduced across processes before :meth:`prune` (distributed calibration)."""
        return []

    def scores(self) -> torch.Tensor:
        """Each weight's importance from the statistics so far, before :meth:`prune` (OWL's
        outlier scores): ``|W|`` here, ``|W|·‖X‖`` for pruners that see data."""
        return self.weight.abs().float()

    @abstractmethod
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        """Return the keep-mask; may update ``self.weight`` in place (SparseGPT does). Pruned weights
        are left exactly zero."""

    @classmethod
    def prune_group(
        cls, pruners: list[Pruner], sparsities: list[float], pattern: SparsityPattern
    ) -> list[PruneResult]:
        """Prune siblings (the leader's statistics shared, see :meth:`share`), each to its
        sparsity: one by one here; a pruner whose work on shared statistics is cheaper done at
        once for the group overrides it."""
        return [p.prune(s, pattern) for p, s in zip(pruners, sparsities)]

    def free(self) -> None:
        """Release accumulated statistics."""

    @classmethod
    def work(cls, width: int, rows: int, options: object) -> float:
        """This pruner's decision on one distinct layer input ``width`` wide, read by ``rows``
        output rows (siblings together), in forward-equivalent flops (the run's estimate,
        :mod:`compress.engine.estimate`; its statistics are timed there instead). Here:
        choosing the mask."""
        return MASK_FLOPS * width * rows


def sequences(inp: torch.Tensor, dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
    """A batch of layer inputs ``(B, T, in)`` as one ``(T, in)`` matrix per sequence, in
    ``dtype`` (a 2-D input is one sequence). A statistic's term computed per sequence (one
    kernel call of one shape) does not depend on how the sequences were batched, or shared among
    processes, nor on the thread count (tests/compress/test_pruners.py checks this on the
    machine it runs on); the terms are then added exactly (:class:`ExactSum`)."""
    batch = inp.reshape(-1, *inp.shape[-2:]) if inp.dim() > 2 else inp.unsqueeze(0)
    for x in batch:
        yield x.to(dtype)


PRUNERS: dict[str, type[Pruner]] = {}


def register(options: type) -> Callable[[type[Pruner]], type[Pruner]]:
    """Class decorator adding a pruner to :data:`PRUNERS` under the name of its ``options``
    (a method of :mod:`compress.core.methods`); it is built with an instance of them."""

    def add(cls: type[Pruner]) -> type[Pruner]:
        PRUNERS[options.METHOD] = cls
        cls.options = options
        return cls

    return add
