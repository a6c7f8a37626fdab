"""Two gloo processes (torchrun, CPU) give the single-process statistics, masks and weights.

This file is also the worker: ``torchrun --nproc-per-node 2 test_distributed.py OUT`` runs
:func:`compute` and every configuration of :data:`GRID` on each rank, and rank 0 saves the
results (one launch for all). The tests run the same functions in one process and compare.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
NSAMPLES, SEQLEN, BATCH = 8, 16, 4  # BATCH is the global batch; each of 2 ranks runs 2


def tiny_model():
    from tests.tiny_models import random_llama

    return random_llama(vocab_size=256)


def prune_block0(model, batches, method: str) -> dict[str, torch.Tensor]:
    """Statistics of block 0's Linears on this rank's batches, summed over ranks, then pruned."""
    from compress.algorithms.masks import SparsityPattern
    from compress.algorithms.pruners import PRUNERS
    from compress.model.blocks import BlockAdapter, weight_view

    layers = BlockAdapter(model).prunable_layers(0)
    pruners = {name: PRUNERS[method](weight_view(m), name) for name, m in layers.items()}
    handles = [
        layers[name].register_forward_pre_hook(lambda _m, args, p=p: p.add_batch(args[0]))
        for name, p in pruners.items()
    ]
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids, use_cache=False)
    for handle in handles:
        handle.remove()
    masks = {}
    for name, pruner in pruners.items():
        for total in pruner.statistics():
            total.all_reduce_()
        masks[name] = pruner.prune(0.5, SparsityPattern.parse("unstructured")).mask
    return masks


def reconstruct_block0(model, batches) -> None:
    """Wanda on block 0, then two epochs of block-wise reconstruction towards the dense block's
    outputs (gradients summed over ranks inside :func:`reconstruct`)."""
    from compress.algorithms.reconstruct import Batches, reconstruct
    from compress.core.config import ReconstructConfig
    from compress.model.blocks import BlockAdapter

    adapter = BlockAdapter(model)
    block = adapter.blocks[0]
    hidden, calls = adapter.capture(batches)
    with torch.no_grad():
        targets = [adapter.run_block(0, x, calls[b][0]) for b, x in enumerate(hidden)]
    masks = prune_block0(model, batches, "wanda")
    layers = adapter.prunable_layers(0)
    params = list(block.parameters())
    param_masks = {layers[name].weight: mask for name, mask in masks.items()}
    reconstruct(
        params,
        param_masks,
        lambda b, x: adapter.run_block(0, x, calls[b][0]),
        Batches(hidden),
        Batches(targets),
        ReconstructConfig(epochs=2, lr=1e-3),
        torch.Generator().manual_seed(0),
    )


def gradients(features: torch.Tensor) -> list[torch.Tensor]:
    """Gradient of the mean loss over all rows: each rank's share of it, summed over ranks."""
    from compress.algorithms.distributed import local_batches, sum_gradients

    torch.manual_seed(1)
    layer = torch.nn.Linear(6, 3)
    (rows,) = local_batches(features, len(features))
    (layer(rows).pow(2).sum() / (len(features) * 3)).backward()
    sum_gradients(layer.parameters())
    return [p.grad for p in layer.parameters()]


def compute() -> dict:
    """Everything compared, computed on this rank's shard of the calibration samples."""
    from compress.algorithms.distributed import local_batches

    ids = torch.randint(0, 256, (NSAMPLES, SEQLEN), generator=torch.Generator().manual_seed(0))
    batches = local_batches(ids, BATCH)
    result: dict = {"rows": sum(len(batch) for batch in batches)}
    for method in ("wanda", "sparsegpt"):
        model = tiny_model()
        masks = prune_block0(model, batches, method)
        result[method] = {"masks": masks, "weights": model.model.layers[0].state_dict()}
    model = tiny_model()
    reconstruct_block0(model, batches)
    result["reconstructed"] = model.model.layers[0].state_dict()
    result["pruned"] = result["wanda"]["weights"]
    result["grads"] = gradients(torch.randn(7, 6, generator=torch.Generator().manual_seed(2)))
    return result


# (method, reconstruction, nsamples, global batch, seqlen): with 2 ranks, batches that split
# evenly, unevenly (6 = 4 + 2), into an empty slice for rank 1 (the last batch of 1 row), and a
# batch larger than the samples (one batch of 3 split 2 + 1).
GRID = [
    (method, "lr", n, batch, seqlen)
    for method in ("wanda", "sparsegpt")
    for n, batch, seqlen in [(8, 8, 16), (4, 2, 32), (6, 4, 24), (5, 2, 16), (3, 8, 20), (7, 3, 12)]
] + [("wanda", "br", 5, 2, 16), ("sparsegpt", "br", 3, 8, 12)]


def grid_case(method: str, technique: str, nsamples: int, batch: int, seqlen: int) -> dict:
    """One configuration through the pipeline's engine entry point (as ``compress prune``):
    masks and the pruned blocks' weights, or the error it raised."""
    from compress.app.prune import run_engine
    from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
    from compress.core.errors import BadInputError
    from compress.data.calibration import Windows
    from compress.model.loading import LoadedModel

    ids = torch.randint(0, 256, (nsamples, seqlen), generator=torch.Generator().manual_seed(7))
    model = tiny_model()
    config = PruneConfig(
        method=method,
        calibration=CalibrationConfig(nsamples=nsamples, seqlen=seqlen, batch_size=batch),
        reconstruct=ReconstructConfig(technique=technique, epochs=2, measure_errors=False),
    )
    loaded = LoadedModel(model, None, "tiny", "tiny")
    windows = Windows(ids, "random", "train", 7, ids.numel())
    try:
        outcome = run_engine(loaded, config, windows, None, None, None, torch.device("cpu"), None)
    except BadInputError as error:
        return {"error": str(error)}
    return {"masks": outcome.masks, "weights": model.model.layers.state_dict()}


def worker(out: Path) -> None:
    from compress.algorithms.distributed import barrier, init_from_env, is_main

    torch.set_num_threads(1)
    init_from_env()
    result = compute()
    grid = {case: grid_case(*case) for case in GRID}
    if is_main():
        torch.save(result, out / "distributed.pt")
        torch.save(grid, out / "grid.pt")
    barrier()


def test_local_batches_slice_every_batch(monkeypatch):
    """One process's batches of 3 rows, each cut in two: the last (1 row) leaves rank 1 none."""
    from compress.algorithms import distributed

    ids = torch.arange(7).unsqueeze(1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank, want in [(0, [[0, 1], [3, 4], [6]]), (1, [[2], [5], []])]:
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        got = [batch.flatten().tolist() for batch in distributed.local_batches(ids, 3)]
        assert got == want


def test_exact_sum_does_not_depend_on_the_order_of_its_terms():
    """A plain float64 sum of the same terms changes with their order; ExactSum does not."""
    from compress.algorithms.distributed import ExactSum

    gen = torch.Generator().manual_seed(0)
    terms = torch.randn(64, 20_000, generator=gen, dtype=torch.float64)
    terms *= torch.exp(3 * torch.randn(64, 1, generator=gen, dtype=torch.float64))
    orders = [torch.arange(64), torch.arange(63, -1, -1), torch.randperm(64, generator=gen)]
    plain, exact = [], []
    for order in orders:
        total = ExactSum((20_000,), torch.device("cpu"))
        for i in order:
            total.add_(terms[i])
        exact.append(total.value())
        plain.append(terms[order].cumsum(0)[-1])
    assert any(not torch.equal(plain[0], p) for p in plain[1:])
    for value in exact[1:]:
        assert torch.equal(value.float(), exact[0].float())


def test_exact_sum_in_chunks_is_the_sum_in_one_step(monkeypatch):
    """ExactSum adds a term a chunk at a time through shared scratch; every entry's hi and lo
    are those of the whole-tensor step, bit for bit (the ops are elementwise)."""
    from compress.algorithms import distributed

    gen = torch.Generator().manual_seed(1)
    terms = torch.randn(8, 3, 2_500, generator=gen) * torch.exp(
        4 * torch.randn(8, 1, 1, generator=gen)
    )
    sums = []
    for chunk in (1 << 20, 1_000, 7):
        monkeypatch.setattr(distributed, "SUM_CHUNK", chunk)
        distributed._scratch.clear()
        total = distributed.ExactSum((3, 2_500), torch.device("cpu"))
        for term in terms:
            total.add_(term)
        sums.append((total.hi, total.lo))
    for hi, lo in sums[1:]:
        assert torch.equal(hi, sums[0][0]) and torch.equal(lo, sums[0][1])
    assert sums[0][1].abs().sum() > 0  # the compensation did catch rounding errors


def test_local_batches_refuses_fewer_samples_than_ranks(monkeypatch):
    from compress.algorithms import distributed
    from compress.core.errors import BadInputError

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(BadInputError, match="below the 2 processes"):
        distributed.local_batches(torch.zeros(1, 1), 4)


def test_single_process_helpers_are_no_ops():
    from compress.algorithms import distributed
    from compress.core.errors import BadInputError

    total = distributed.ExactSum((3,), torch.device("cpu"))
    total.add_(torch.ones(3))
    total.all_reduce_()
    assert total.value().tolist() == [1, 1, 1]
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.sum_floats([1.5, 2.0]) == [1.5, 2.0]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        with pytest.raises(BadInputError, match="torchrun"):
            distributed.init_from_env()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One torchrun launch (2 gloo ranks) of this file's worker; the folder of its results."""
    out = tmp_path_factory.mktemp("two-ranks")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*launch, __file__, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(map(str, c)))
def test_grid_two_ranks_match_one_process(two_ranks, case):
    """Masks identical and weights equal to float tolerance, however the batches split."""
    two = torch.load(two_ranks / "grid.pt")[case]
    one = grid_case(*case)
    assert "error" not in two, two.get("error")
    assert one["masks"].keys() == two["masks"].keys()
    for name, mask in one["masks"].items():
        differ = int((mask != two["masks"][name]).sum())
        assert differ == 0, f"{name}: {differ} mask entries differ"
    for key, value in one["weights"].items():
        torch.testing.assert_close(
            two["weights"][key], value, rtol=1e-4, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}"
        )


def test_two_gloo_processes_match_one_process(two_ranks):
    dist_result = torch.load(two_ranks / "distributed.pt")
    single = compute()
    assert dist_result["rows"] == NSAMPLES // 2 and single["rows"] == NSAMPLES
    for method in ("wanda", "sparsegpt"):
        for name, mask in single[method]["masks"].items():
            assert torch.equal(mask, dist_result[method]["masks"][name]), (method, name)
        for key, value in single[method]["weights"].items():
            torch.testing.assert_close(dist_result[method]["weights"][key], value)
    for key, value in single["reconstructed"].items():
        assert not torch.equal(value, single["pruned"][key]), key  # training moved it
        torch.testing.assert_close(dist_result["reconstructed"][key], value, rtol=1e-4, atol=1e-6)
    for got, want in zip(dist_result["grads"], single["grads"]):
        torch.testing.assert_close(got, want)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))


def test_cli_prune_distributed_matches_one_process(tiny_model_dir, tmp_path):
    """`compress prune --distributed` under torchrun (2 gloo ranks) = one process, with batches
    of 4 and 1 rows (rank 1's slice of the second is empty)."""
    from safetensors.torch import load_file

    common = [
        "prune",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--method",
        "sparsegpt",
        "--nsamples",
        "5",
        "--seqlen",
        "32",
        "--batch-size",
        "4",
        "--reconstruct",
        "br",
        "--recon-epochs",
        "2",
        # The rate the tolerance below was set for: the ranks' gradient sums differ from one
        # process's in the last bits, and Adam moves each weight by about lr per step whatever
        # the gradient's size, so the noise in the weights scales with lr (at the budget's
        # default of 3e-3 it reaches 4e-6).
        "--recon-lr",
        "2e-4",
        "--no-errors",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "compress.cli", *common, "--output", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    double = subprocess.run(
        [
            *launcher,
            "-m",
            "compress.cli",
            *common,
            "--distributed",
            "--output",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "two" / "model.safetensors"),
    )
    for name, tensor in one.items():
        assert torch.equal(tensor == 0, two[name] == 0), name  # identical masks
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-6)
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["calibration"]["processes"] == 2
