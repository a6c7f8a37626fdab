"""Data-parallel calibration on ``torch.distributed``: thin helpers, no-ops in one process.

Launched by ``torchrun`` or ``accelerate launch`` (both set ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), with gloo on CPU and nccl on GPU. Every rank
holds the whole model and a slice of every calibration batch (:func:`local_batches`), so any
``--nsamples`` and ``--batch-size`` work. Results match one process because everything reduced is
a sum that does not depend on how the batches were cut: the pruners' statistics (Wanda's
``sum_tokens x_j^2``, SparseGPT's ``sum x x^T`` and its token count: one term per calibration
sequence, so terms do not depend on the batches, added in an :class:`ExactSum`, so the float32
values the pruners use do not depend on the order of the additions), and reconstruction
gradients, each rank's loss being its share of the global batch's mean
(:func:`sum_gradients`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

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


def local_batches(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """This rank's rows of every calibration batch, the same on every run.

    The batches are those of one process (``batch_size`` rows, the last one shorter); rank ``r``
    holds the rows (slots) ``[r·w, (r+1)·w)`` of each, ``w = ceil(batch_size / world_size)``, so
    a slot belongs to the same rank in every batch (the per-epoch reshuffle of
    :func:`compress.algorithms.reconstruct.epoch_steps` relies on it). A slice is empty where a batch has
    too few rows; the rank still takes part in that step.

    Raises:
        BadInputError: fewer samples than ranks.
    """
    world, r = world_size(), rank()
    if ids.shape[0] < world:
        raise BadInputError(
            f"--nsamples {ids.shape[0]} is below the {world} processes; use at least {world}"
        )
    width = -(-batch_size // world)
    return [batch[r * width : (r + 1) * width] for batch in ids.split(batch_size)]


SUM_CHUNK = 1 << 20  # elements per step of ExactSum.add_: its scratch is 3 x 8 MiB, not 3 x the sum


class ExactSum:
    """A float64 running sum whose value does not depend on the order of its terms (Neumaier's
    compensated summation: ``hi`` plus the rounding errors gathered in ``lo``, together ~106
    bits), also when summed over ranks (:meth:`all_reduce_`).

    Why: a plain float32 or float64 sum changes in its last bits with the order of the
    additions, so one process and several ranks (which add the same terms in another order)
    get float32 statistics that differ now and then by an ulp, enough to flip near-tied mask
    entries. Here two orders differ by ~1e-32 relatively, far below float32 rounding.

    Memory: ``hi`` and ``lo``, 16 bytes per entry; a term is added :data:`SUM_CHUNK` entries at
    a time through scratch shared by every sum on the device (a SparseGPT Hessian of a 7B MLP's
    11,008 inputs holds 60.6 M entries, so scratch shaped like the sum would be 1.45 GB more).
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.hi = torch.zeros(shape, dtype=torch.float64, device=device)
        self.lo = torch.zeros_like(self.hi)

    @torch.no_grad()
    def add_(self, term: torch.Tensor) -> None:
        """Add ``term`` (any float dtype, shaped like the sum); Knuth's TwoSum gives the rounding
        error of ``hi + term`` exactly (the value Neumaier's branch computes), all in place."""
        hi, lo, flat = self.hi.view(-1), self.lo.view(-1), term.reshape(-1)
        for start in range(0, hi.numel(), SUM_CHUNK):
            stop = min(start + SUM_CHUNK, hi.numel())
            _two_sum_(hi[start:stop], lo[start:stop], flat[start:stop])

    def value(self, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``(hi + lo) * scale`` rounded to ``dtype``, built :data:`SUM_CHUNK` entries at a time
        (no float64 temporary shaped like the sum; ``scale`` 1 leaves every bit as it is)."""
        out = torch.empty(self.hi.shape, dtype=dtype, device=self.hi.device)
        hi, lo, flat = self.hi.view(-1), self.lo.view(-1), out.view(-1)
        for start in range(0, hi.numel(), SUM_CHUNK):
            part = slice(start, start + SUM_CHUNK)
            flat[part] = ((hi[part] + lo[part]) * scale).to(dtype)
        return out

    @torch.no_grad()
    def all_reduce_(self) -> None:
        """Sum over ranks, in place, compensated too (no-op in one process): every rank's
        ``hi`` is broadcast in turn and added, the ``lo`` parts (tiny) are summed plainly."""
        if not is_distributed():
            return
        total = ExactSum(tuple(self.hi.shape), self.hi.device)
        for src in range(world_size()):
            part = self.hi.clone()
            dist.broadcast(part, src=src)
            total.add_(part)
        dist.all_reduce(self.lo, op=dist.ReduceOp.SUM)
        self.hi, self.lo = total.hi, total.lo + self.lo

    def free(self) -> None:
        self.hi = self.lo = torch.empty(0)


_scratch: dict[torch.device, torch.Tensor] = {}


def _two_sum_(hi: torch.Tensor, lo: torch.Tensor, term: torch.Tensor) -> None:
    """``hi += term`` with the rounding error added to ``lo``, on 1-D slices of one chunk."""
    device, count = hi.device, hi.numel()
    if device not in _scratch or _scratch[device].shape[1] < count:
        _scratch[device] = torch.empty(3, count, dtype=torch.float64, device=device)
    t, total, b = (row[:count] for row in _scratch[device])
    t.copy_(term)
    torch.add(hi, t, out=total)
    torch.sub(total, hi, out=b)  # b' = total - hi: the part of t that made it in
    t.sub_(b)  # t - b'
    torch.sub(total, b, out=b)  # a' = total - b'
    lo.add_(hi.sub_(b).add_(t))  # the exact error (hi - a') + (t - b')
    hi.copy_(total)


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
