"""Seconds per whole-weight scan on this machine: torch's CPU kernels against the numpy reads
that compress.algorithms.scans uses, on one Llama-2-7B MLP matrix (4096 x 11008, half zeros)
in float32 and bfloat16.

    python benchmarks/scans.py [--output out/bench/scans.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import load_average, machine, save
from compress.algorithms.scans import all_finite, zero_count


def torch_zero_count(weight: torch.Tensor) -> int:
    return weight.numel() - int(torch.count_nonzero(weight))


def torch_all_finite(weight: torch.Tensor) -> bool:
    return bool(torch.isfinite(weight).all())


def seconds(fn: Callable[[torch.Tensor], object], weight: torch.Tensor, repeats: int = 3) -> float:
    fn(weight)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(weight)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("out/bench/scans.json"))
    args = parser.parse_args()
    before = load_average()
    print("load average before:", before)
    weight = torch.randn(4096, 11008, generator=torch.Generator().manual_seed(0))
    weight[weight.abs() < 0.675] = 0.0
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        w = weight.to(dtype)
        for scan, torch_way, ours in (
            ("zero count", torch_zero_count, zero_count),
            ("all finite", torch_all_finite, all_finite),
        ):
            row = {"dtype": str(dtype).removeprefix("torch."), "scan": scan}
            row |= {"torch_s": seconds(torch_way, w), "scans_s": seconds(ours, w)}
            rows.append(row)
    after = load_average()
    print(f"{'dtype':9s} {'scan':11s} {'torch s':>8s} {'scans s':>8s} {'ratio':>6s}")
    for r in rows:
        ratio = r["scans_s"] / r["torch_s"]
        print(
            f"{r['dtype']:9s} {r['scan']:11s} {r['torch_s']:8.3f} {r['scans_s']:8.3f} {ratio:6.2f}"
        )
    print("load average after:", after)
    save(
        args.output,
        {"machine": machine(), "loadavg_before": before, "rows": rows, "loadavg_after": after},
    )


if __name__ == "__main__":
    main()
