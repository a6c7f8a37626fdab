"""The memory/disk planner on made-up sizes (no model, no download)."""

import pytest

from compress.core.errors import BadInputError
from compress.model.plan import (
    GIB,
    RUNTIME_BYTES,
    BlockShape,
    DiskNeed,
    Workload,
    check_disk,
    plan_memory,
    weights_budget,
    working_set_bytes,
)

SEVEN_B = 6_738_000_000  # Llama-2-7b's parameters
BLOCKS = 32


def test_cpu_auto_is_float32_when_it_fits():
    plan = plan_memory(SEVEN_B, BLOCKS, "auto", False, memory=64 * GIB, ram=64 * GIB)
    assert (plan.dtype, plan.onload) == ("float32", False)


def test_cpu_auto_picks_bfloat16_when_float32_would_not_fit():
    plan = plan_memory(SEVEN_B, BLOCKS, "auto", False, memory=24 * GIB, ram=24 * GIB)
    assert (plan.dtype, plan.onload, plan.weights_bytes) == ("bfloat16", False, 2 * SEVEN_B)


def test_neither_fits_onloads_block_by_block():
    plan = plan_memory(SEVEN_B, BLOCKS, "auto", False, memory=8 * GIB, ram=8 * GIB)
    assert (plan.dtype, plan.onload) == ("bfloat16", True)


def test_explicit_dtype_is_kept_and_onloaded():
    plan = plan_memory(SEVEN_B, BLOCKS, "float32", False, memory=16 * GIB, ram=16 * GIB)
    assert (plan.dtype, plan.onload) == ("float32", True)


def test_gpu_auto_is_bfloat16_and_onloads_past_its_memory():
    fits = plan_memory(SEVEN_B, BLOCKS, "auto", True, memory=80 * GIB, ram=16 * GIB)
    assert (fits.dtype, fits.onload) == ("bfloat16", False)
    small = plan_memory(SEVEN_B, BLOCKS, "auto", True, memory=8 * GIB, ram=32 * GIB)
    assert (small.dtype, small.onload) == ("bfloat16", True)


def test_refusal_gives_numbers_and_flags():
    with pytest.raises(BadInputError) as caught:
        plan_memory(SEVEN_B, BLOCKS, "float32", False, memory=2 * GIB, ram=2 * GIB)
    message = str(caught.value)
    assert "31.4 GiB of RAM in float32" in message and "2.0 GiB is available" in message
    assert "--dtype bfloat16" in message and "--device cuda" in message
    assert "\n" not in message


def test_disk_needs_on_one_filesystem_add_up():
    need = [
        DiskNeed("download", 13 * GIB, "/hf", free=20 * GIB, filesystem=1),
        DiskNeed("output", 13 * GIB, "out/x", free=20 * GIB, filesystem=1),
    ]
    with pytest.raises(BadInputError, match=r"the download \(13.0 GiB, /hf\) and the output"):
        check_disk(need)
    check_disk([need[0], DiskNeed("output", 13 * GIB, "/big", free=20 * GIB, filesystem=2)])


def test_local_folder_is_planned_before_loading(tiny_model_dir, monkeypatch):
    """A local folder's weights are sized from its files: with RAM for bfloat16 but not for
    float32, ``--dtype auto`` on a CPU loads bfloat16."""
    import torch

    from compress.model import preflight
    from compress.model.loading import load_model

    stored = preflight.weights_bytes(preflight.folder_sizes(tiny_model_dir))  # float32 on disk
    ram = int(stored * 0.9)  # float32 x headroom does not fit; bfloat16 does
    monkeypatch.setattr(preflight, "memory", lambda device: (ram, ram))
    loaded = load_model(str(tiny_model_dir), "cpu", "auto")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(preflight, "memory", lambda device: (stored * 2, stored * 2))
    assert next(load_model(str(tiny_model_dir), "cpu", "auto").model.parameters()).dtype == (
        torch.float32
    )


# the 7B shape of benchmarks/scale_7b.py: one block's weights in bfloat16, its largest matrix
BLOCK_7B = BlockShape(
    bytes=2 * (4 * 4096**2 + 3 * 4096 * 11008),
    largest_layer=4096 * 11008,
    columns_squared=6 * 4096**2 + 11008**2,
    hidden=4096,
    inner=11008,
)


def test_working_set_adds_runtime_block_pruning_and_activations():
    """Wanda, 8 x 128 in batches of 1: each term from the shapes."""
    load = Workload(tokens=8 * 128, batch_tokens=128)
    activations = 8 * 1024 * 4096 + 4 * 128 * (3 * 11008 + 8 * 4096)
    want = RUNTIME_BYTES + 2 * BLOCK_7B.bytes + 16 * 4096 * 11008 + activations
    assert working_set_bytes(BLOCK_7B, load) == want
    assert 2.1 * GIB < want < 2.3 * GIB


def test_second_order_statistics_grow_the_working_set():
    wanda = working_set_bytes(BLOCK_7B, Workload(1024, 128))
    sparsegpt = working_set_bytes(BLOCK_7B, Workload(1024, 128, gram_bytes=8))
    assert sparsegpt - wanda == 8 * (6 * 4096**2 + 11008**2)


def test_the_weights_get_what_the_working_set_leaves():
    assert weights_budget(6 * GIB, 2 * GIB) == 4 * GIB


def test_a_bound_below_the_working_set_is_refused_in_one_line():
    with pytest.raises(
        BadInputError, match=r"cpu=1\.0 GiB cannot hold .* \(2\.2 GiB: .*above 2\.2 GiB"
    ):
        weights_budget(1 * GIB, working_set_bytes(BLOCK_7B, Workload(1024, 128)))
