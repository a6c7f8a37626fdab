"""Peak memory: accelerator memory of one block's turn, and this process's resident memory."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
