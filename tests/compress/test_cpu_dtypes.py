"""Half-precision weights on a CPU without the instructions for them: a warning, not a surprise."""

from __future__ import annotations

import platform

import pytest
import torch

from compress.core.dtypes import emulated_on_this_cpu
from compress.model import loading


@pytest.mark.parametrize(
    ("dtype", "bf16", "amx", "amx_fp16", "emulated"),
    [
        (torch.bfloat16, False, False, False, True),  # AVX2 only
        (torch.bfloat16, True, False, False, False),  # AVX512-BF16
        (torch.bfloat16, False, True, False, False),  # AMX
        (torch.float16, True, True, False, True),
        (torch.float16, False, True, True, False),
        (torch.float32, False, False, False, False),
    ],
)
def test_emulation_follows_the_cpu_flags(monkeypatch, dtype, bf16, amx, amx_fp16, emulated):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16)
    assert emulated_on_this_cpu(dtype) is emulated


def test_other_architectures_are_not_judged(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not emulated_on_this_cpu(torch.bfloat16)


@pytest.mark.parametrize("emulated", [True, False])
def test_loading_bfloat16_on_such_a_cpu_warns_in_one_line(tiny_model_dir, monkeypatch, emulated):
    monkeypatch.setattr(loading, "emulated_on_this_cpu", lambda dtype: emulated)
    lines: list[str] = []
    loaded = loading.load_model(str(tiny_model_dir), "cpu", "bfloat16", log=lines.append)
    assert next(loaded.model.parameters()).dtype is torch.bfloat16
    warnings = [line for line in lines if line.startswith("warning: this CPU has no bfloat16")]
    assert len(warnings) == (1 if emulated else 0), lines
    assert all("\n" not in line and "--dtype float32" in line for line in warnings)
