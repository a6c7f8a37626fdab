"""How much torch allocates on the CPU while a call runs (tests that keep memory use down)."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def largest_allocation(fn: Callable[[], object]) -> int:
    """The most bytes any one torch op (its children included) allocated during ``fn()``."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((event.cpu_memory_usage for event in prof.events()), default=0)
