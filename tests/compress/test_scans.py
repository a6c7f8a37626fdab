"""The numpy-backed scans agree with torch's own counts in every float dtype."""

from __future__ import annotations

import pytest
import torch

from compress.algorithms.finite import non_finite_count
from compress.algorithms.scans import all_finite, zero_count

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_value_anywhere_is_found_and_counted(dtype, bad):
    weight = torch.randn(3, 1_000_003, generator=torch.Generator().manual_seed(0)).to(dtype)
    assert all_finite(weight) and non_finite_count(weight) == 0
    for index in [(0, 0), (1, 524_289), (2, 1_000_002)]:  # first part, a later one, the last
        damaged = weight.clone()
        damaged[index] = bad
        assert not all_finite(damaged)
        assert non_finite_count(damaged) == 1


def test_a_sum_that_overflows_on_finite_values_is_still_counted_exactly():
    weight = torch.full((1000,), torch.finfo(torch.float32).max)
    assert not all_finite(weight)  # the sum overflowed; the exact count decides
    assert non_finite_count(weight) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_count_equals_torch_on_a_pruned_weight(dtype):
    weight = torch.randn(700, 3001, generator=torch.Generator().manual_seed(1)).to(dtype)
    weight[weight.abs() < 0.6] = 0.0
    weight[5, :7] = -0.0
    assert zero_count(weight) == int((weight == 0).sum())
    assert zero_count(weight.t()) == zero_count(weight)  # a non-contiguous view


def test_the_meta_device_and_integers_have_no_non_finite_values():
    assert non_finite_count(torch.empty(4, device="meta")) == 0
    assert non_finite_count(torch.arange(4)) == 0
