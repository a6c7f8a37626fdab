"""Memory ``compress prune`` holds: freed heap returned between blocks."""

from __future__ import annotations

import psutil
import pytest
import torch

from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.model.placement import memory

MIB = 2**20


@pytest.mark.skipif(memory._malloc_trim() is None, reason="no malloc_trim in this C library")
def test_release_free_memory_returns_freed_heap_pages():
    rss = psutil.Process().memory_info
    big = torch.ones(16 * MIB // 4)  # mmapped; freeing it raises glibc's mmap threshold to 16 MB
    del big
    pieces = [torch.ones(2 * MIB // 4) for _ in range(64)]  # 128 MB, now from the heap
    keep = pieces[-1]  # the top of the heap stays in use: free() alone cannot shrink it
    del pieces
    before = rss().rss
    memory.release_free_memory()
    assert before - rss().rss > 64 * MIB
    assert keep.sum() == keep.numel()


def test_release_free_memory_is_a_no_op_without_malloc_trim(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    memory.release_free_memory()


def test_engine_releases_free_memory_after_every_block(monkeypatch, tiny_llama):
    from compress.engine import prune_model, steps

    calls = []
    monkeypatch.setattr(steps, "release_free_memory", lambda: calls.append(1))
    ids = torch.randint(0, tiny_llama.config.vocab_size, (4, 16))
    config = PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique="lr"),
    )
    prune_model(tiny_llama, ids, config)
    assert len(calls) == tiny_llama.config.num_hidden_layers


def _cr_config() -> PruneConfig:
    return PruneConfig(
        method="wanda",
        calibration=CalibrationConfig(nsamples=8, seqlen=32, batch_size=4),
        reconstruct=ReconstructConfig(technique="br+gp+cr", epochs=2, lr=1e-3),
    )


def test_engine_without_kept_masks_holds_two_blocks_and_prunes_the_same(monkeypatch):
    from compress.engine import Engine, steps
    from tests.tiny_models import random_llama

    ids = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
    kept_model, lean_model = (random_llama(vocab_size=256, layers=4) for _ in range(2))
    kept = Engine(kept_model, _cr_config()).run(ids)
    held = []  # blocks whose masks the lean engine holds after each step
    step = steps.Engine.step

    def spy(self, i, sets):
        entry = step(self, i, sets)
        held.append({name.split(".")[2] for name in self.outcome.masks})
        return entry

    monkeypatch.setattr(steps.Engine, "step", spy)
    lean = Engine(lean_model, _cr_config(), keep_masks=False).run(ids)
    assert max(len(blocks) for blocks in held) == 2  # the CR window [i - 1, i] and no more
    assert set(lean.masks) == {name for name in kept.masks if ".layers.3." in name}
    untimed = [{name: {**e, "seconds": 0} for name, e in o.layers.items()} for o in (lean, kept)]
    assert untimed[0] == untimed[1]
    for (name, a), b in zip(kept_model.state_dict().items(), lean_model.state_dict().values()):
        assert torch.equal(a, b), name
