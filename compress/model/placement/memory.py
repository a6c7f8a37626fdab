"""Peak memory: accelerator memory of one block's turn, and this process's resident memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass
class PeakMemory:
    """Filled when the :func:`measure_peak` block ends; None on a CPU."""

    bytes: int | None = None


@contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMemory]:
    """Peak ``torch.cuda.max_memory_allocated`` on ``device`` during the body (one block's turn)."""
    peak = PeakMemory()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield peak
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            peak.bytes = torch.cuda.max_memory_allocated(device)


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``ru_maxrss`` is bytes on macOS, KiB on Linux."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc: ``malloc_trim(0)``).

    Why: a block's forward frees tensors of 1-32 MB that glibc keeps in its heap once its
    dynamic mmap threshold has grown; their pages stay resident, and from block to block the
    heap grows by the fragments (over a whole model, by as much as its weights). Called between blocks, the peak is one block's working set on top of what
    is alive. No-op where there is no ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
