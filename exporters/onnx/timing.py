"""CPU latency of causal LMs, the same way for PyTorch and ONNX Runtime models.

Both kinds are called as ``model(input_ids=, attention_mask=)`` and ``model.generate(...)``, so one
pair of functions times either. Figures are medians over ``repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine() -> str:
    """The CPU model and thread count, for stating where a latency was measured."""
    cpuinfo = Path("/proc/cpuinfo")
    name = platform.processor() or platform.machine()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} CPU threads"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def prefill_seconds(model, input_ids: torch.Tensor, repeats: int = 5) -> float:
    """Seconds for one forward pass over ``input_ids`` ``(B, T)`` (the prompt, no cache)."""
    mask = torch.ones_like(input_ids)
    return median_seconds(lambda: model(input_ids=input_ids, attention_mask=mask), repeats)


@torch.no_grad()
def generate_seconds(
    model, input_ids: torch.Tensor, new_tokens: int, pad_token_id: int, repeats: int = 3
) -> float:
    """Seconds for greedy generation of exactly ``new_tokens`` tokens after ``input_ids``."""
    return median_seconds(generation(model, input_ids, new_tokens, pad_token_id), repeats)


def generation(
    model, input_ids: torch.Tensor, new_tokens: int, pad_token_id: int
) -> Callable[[], object]:
    """A call that generates exactly ``new_tokens`` greedy tokens after ``input_ids``."""
    mask = torch.ones_like(input_ids)

    @torch.no_grad()
    def run() -> object:
        return model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id,
        )

    return run


def measure_latency(
    model,
    input_ids: torch.Tensor,
    new_tokens: int,
    pad_token_id: int,
    repeats: int = 3,
) -> dict:
    """Prefill latency and generation throughput, with the shape they were measured at."""
    prefill = prefill_seconds(model, input_ids, repeats)
    generate = generate_seconds(model, input_ids, new_tokens, pad_token_id, repeats)
    return {
        "batch": int(input_ids.shape[0]),
        "prompt_tokens": int(input_ids.shape[1]),
        "new_tokens": new_tokens,
        "repeats": repeats,
        "prefill_ms": 1000 * prefill,
        "generate_ms": 1000 * generate,
        "tokens_per_second": input_ids.shape[0] * new_tokens / generate,
        "torch_threads": torch.get_num_threads(),
    }
