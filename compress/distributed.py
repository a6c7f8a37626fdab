"""Data-parallel calibration on ``torch.distributed``: thin helpers, no-ops in one process.

Launched by ``torchrun`` or ``accelerate launch`` (both set ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), with gloo on CPU and nccl on GPU. Every rank
holds the whole model and a slice of every calibration batch (:func:`local_batches`), so any
``--nsamples`` and ``--batch-size`` work. Results match one process because everything reduced is
a sum that does not depend on how the batches were cut: the pruners' statistics (Wanda's
``sum_tokens x_j^2``, SparseGPT's ``sum x x^T`` and its token count, accumulated in float64 so
that the float32 values the pruners use come out the same whatever the order of the additions),
and reconstruction gradients, each rank's loss being its share of the global batch's mean
(:func:`sum_gradients`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from compress.errors import BadInputError

LAUNCH_HINT = "launch with `torchrun --nproc-per-node N -m compress.cli ...` or `accelerate launch`"


def is_distributed() -> bool:
    """True inside an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes outputs and logs."""
    return rank() == 0


def init_from_env(timeout_minutes: int = 120) -> torch.device:
    """Join the process group the launcher described; return this rank's device.

    nccl with one GPU per rank (``LOCAL_RANK``) where CUDA is available, gloo on CPU. The long
    timeout lets rank 0 evaluate or save while the others wait at a barrier.

    Raises:
        BadInputError: the process was not started by a distributed launcher.
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise BadInputError(f"--distributed needs a launcher: {LAUNCH_HINT}")
    device = torch.device("cpu")
    backend = "gloo"
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        backend = "nccl"
    if not is_distributed():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def local_batches(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """This rank's rows of every calibration batch, the same on every run.

    The batches are those of one process (``batch_size`` rows, the last one shorter); each is
    cut into ``world_size`` near-equal slices and rank ``r`` takes slice ``r``. A slice is empty
    where a batch has fewer rows than there are ranks; the rank still takes part in that step.

    Raises:
        BadInputError: fewer samples than ranks.
    """
    world, r = world_size(), rank()
    if ids.shape[0] < world:
        raise BadInputError(
            f"--nsamples {ids.shape[0]} is below the {world} processes; use at least {world}"
        )
    return [batch.tensor_split(world)[r] for batch in ids.split(batch_size)]


def all_reduce_(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over all ranks, in place (no-op in one process)."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def sum_floats(values: list[float], device: torch.device | None = None) -> list[float]:
    """Python floats summed over all ranks (error numerators/denominators, early stopping)."""
    if not is_distributed():
        return list(values)
    buffer = torch.tensor(values, dtype=torch.float64, device=device or _comm_device())
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.tolist()


@torch.no_grad()
def sum_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each ``.grad`` by its sum over ranks (call after ``backward``; a missing gradient
    counts as zero). Every rank reduces the same parameters in the same order, also a rank whose
    slice of the batch was empty and ran no backward."""
    if not is_distributed():
        return
    for param in params:
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values into every rank's tensors, in place (keeps ranks identical
    where kernels are not bitwise deterministic)."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=src)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo takes CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
