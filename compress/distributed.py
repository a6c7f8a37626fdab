"""Data-parallel calibration on ``torch.distributed``: thin helpers, no-ops in one process.

Launched by ``torchrun`` or ``accelerate launch`` (both set ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), with gloo on CPU and nccl on GPU. Every rank
holds the whole model and a shard of the calibration samples. Results match one process because
everything reduced is a sum: Wanda's ``sum_tokens x_j^2``, SparseGPT's ``sum x x^T`` and its token
count (:meth:`compress.pruners.base.Pruner.statistics`), and reconstruction gradients, which are
averaged so that rank ``r`` holding slice ``r`` of every global batch gives the global batch's
mean gradient (:func:`shard` lays samples out that way).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from compress.core.errors import BadInputError

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


def shard(ids: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """This rank's calibration samples (rows of ``ids``), the same on every run.

    Without ``batch_size``: contiguous, near-equal chunks. With it (the global batch size):
    every global batch of ``batch_size`` rows is cut into ``world_size`` equal slices and rank
    ``r`` takes slice ``r`` of each, so rank-local batches of ``batch_size / world_size`` rows
    taken in the same order average to exactly the single-process batches.

    Raises:
        BadInputError: fewer samples than ranks, or sizes that do not divide.
    """
    world, r = world_size(), rank()
    n = ids.shape[0]
    if n < world:
        raise BadInputError(f"--nsamples {n} is below the {world} processes; use at least {world}")
    if batch_size is None:
        return ids.tensor_split(world)[r]
    if batch_size % world or n % batch_size:
        raise BadInputError(
            f"with {world} processes, --batch-size ({batch_size}) must be a multiple of {world} "
            f"and divide --nsamples ({n})"
        )
    local = batch_size // world
    return ids.reshape(n // batch_size, world, local, *ids.shape[1:])[:, r].reshape(
        -1, *ids.shape[1:]
    )


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


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each ``.grad`` by its mean over ranks (call after ``backward``)."""
    if not is_distributed():
        return
    world = world_size()
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)


@contextmanager
def synced_gradients(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Average every gradient over ranks as soon as ``backward`` accumulates it (as DDP does),
    so a training loop written for one process needs no change. Every rank runs the same
    graph, so the hooks fire, and the collectives are issued, in the same order."""
    if not is_distributed():
        yield
        return
    world = world_size()

    def hook(param: torch.Tensor) -> None:
        dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
        param.grad.div_(world)

    handles = [p.register_post_accumulate_grad_hook(hook) for p in params if p.requires_grad]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
