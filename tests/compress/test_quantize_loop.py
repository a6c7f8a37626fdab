"""The quantization grid and the OBS column loop that quantizes (joint with SparseGPT's pruning,
or GPTQ with a fixed mask), against an independent float64 reference."""

from __future__ import annotations

import pytest
import torch

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners.sparsegpt import SparseGPTPruner
from compress.algorithms.quant.grid import QuantGrid, check_grid, round_to_nearest
from compress.core.errors import BadInputError
from compress.core.methods import SparseGPTOptions


@pytest.mark.parametrize("bits", [4, 8])
def test_grid_rounds_to_symmetric_integers_with_float16_scales(bits):
    grid = QuantGrid(bits, 8)
    w = torch.randn(5, 32)
    values, scales = round_to_nearest(w, grid)
    assert scales.dtype == torch.float16 and scales.shape == (5, 4)
    q = values / grid.expand(scales, 32)
    assert torch.equal(q, q.round())
    assert q.min() >= grid.qmin and q.max() <= grid.qmax
    # each group's largest magnitude lands on the grid's end: |q| is 2^(b-1) - 1 or 2^(b-1)
    ends = q.view(5, 4, 8).abs().amax(dim=2)
    assert ((ends == grid.qmax) | (ends == -grid.qmin)).all()
    # half a step, and at the clamped end the float16 rounding of the scale on top
    assert ((values - w).abs() <= grid.expand(scales, 32) * (0.5 + -grid.qmin * 2**-11)).all()


def test_grid_keeps_pruned_weights_exactly_zero_and_scales_from_kept_ones():
    grid = QuantGrid(4, 4)
    w = torch.tensor([[100.0, 1.0, -2.0, 0.5]])
    keep = torch.tensor([[False, True, True, True]])
    values, scales = round_to_nearest(w, grid, keep)
    assert values[0, 0] == 0.0
    assert scales[0, 0] == torch.tensor(2.0 / 7.5).half()  # from the kept weights only


def test_grid_of_zeros_has_the_smallest_scale_and_zero_values():
    values, scales = round_to_nearest(torch.zeros(2, 8), QuantGrid(4, 8))
    assert torch.equal(values, torch.zeros(2, 8)) and (scales > 0).all()


def test_group_size_must_divide_the_columns():
    check_grid(QuantGrid(4, 32), 576, "layer")
    check_grid(QuantGrid(4, 0), 577, "layer")
    with pytest.raises(BadInputError, match="does not divide"):
        check_grid(QuantGrid(4, 128), 576, "model.layers.0.mlp.up_proj")


def reference_joint(W, X, sparsity, grid, blocksize, percdamp, fixed_pruned=None):
    """Row-major float64 SparseGPT with quantization of the kept weights (GPTQ's group scales
    taken from the kept weights when a group's first column is reached), written from the
    papers' Algorithm 1 without any of the loop's reorganisation."""
    W = W.double().clone()
    rows, cols = W.shape
    H = 2.0 / X.shape[0] * X.double().t() @ X.double()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=torch.float64)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool) if fixed_pruned is None else fixed_pruned
    g = grid.group_of(cols)
    scales = torch.zeros(rows, cols // g, dtype=torch.float16)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        if fixed_pruned is None:
            score = W[:, i1:i2] ** 2 / torch.diag(Hinv)[i1:i2] ** 2
            n = int(round(sparsity * score.numel()))
            if n:
                low = torch.topk(score.flatten(), n, largest=False).indices
                block = pruned[:, i1:i2].clone()
                block.view(-1)[low] = True
                pruned[:, i1:i2] = block
        for c in range(i1, i2):
            if c % g == 0:
                kept = W[:, c : c + g] * ~pruned[:, c : c + g]
                scales[:, c // g] = grid.scales(kept)
            s = scales[:, c // g].double()
            q = torch.clamp(torch.round(W[:, c] / s), grid.qmin, grid.qmax) * s
            q[pruned[:, c]] = 0.0
            err = (W[:, c] - q) / Hinv[c, c]
            W[:, c:] -= err.unsqueeze(1) * Hinv[c, c:].unsqueeze(0)
            W[:, c] = q
    return W, ~pruned, scales


def run_loop(W, X, grid, sparsity=0.5, blocksize=16, keep=None):
    layer = W.clone()
    pruner = SparseGPTPruner(layer, "layer", SparseGPTOptions(blocksize=blocksize))
    pruner.add_batch(X.unsqueeze(0))
    if keep is None:
        (result,) = SparseGPTPruner.prune_group([pruner], [sparsity], SparsityPattern(), grid)
    else:
        (result,) = SparseGPTPruner.quantize_group([pruner], [keep], grid)
    return layer, result


@pytest.mark.parametrize("bits,group", [(4, 8), (8, 16), (4, 0)])
def test_joint_sparsegpt_matches_a_float64_reference(bits, group):
    torch.manual_seed(0)
    W, X = torch.randn(24, 48), torch.randn(200, 48)
    grid = QuantGrid(bits, group)
    ours, result = run_loop(W, X, grid)
    ref, ref_keep, ref_scales = reference_joint(W, X, 0.5, grid, 16, 0.01)
    assert torch.equal(result.mask, ref_keep)
    assert torch.equal(ours[~result.mask], torch.zeros(int((~result.mask).sum())))
    # every kept weight on its group's grid, the scales those of the reference
    q = ours.float() / grid.expand(result.scales, 48)
    assert torch.equal(q, q.round()) and q.abs().max() <= -grid.qmin
    close = (result.scales.float() - ref_scales.float()).abs() <= ref_scales.float() * 2**-9
    assert close.all()
    # float32 against float64: an integer may round the other way on a near-tie, rarely
    same = (ours.double() - ref).abs() <= 1e-5 * (1 + ref.abs())
    assert same.float().mean() >= 0.98
    out, ref_out = X @ (ours - W).t(), X.double() @ (ref - W.double()).t()
    assert abs(out.norm() / ref_out.norm() - 1) < 0.02


def test_gptq_with_a_fixed_mask_keeps_it_and_beats_round_to_nearest():
    torch.manual_seed(1)
    # correlated inputs (as a model's are): the update has errors of other columns to undo
    W, X = (
        torch.randn(32, 64),
        torch.randn(256, 16) @ torch.randn(16, 64) + 0.1 * torch.randn(256, 64),
    )
    keep = torch.rand(32, 64) > 0.5
    grid = QuantGrid(4, 16)
    ours, result = run_loop(W * keep, X, grid, keep=keep)
    assert torch.equal(result.mask, keep)
    assert torch.equal(ours[~keep], torch.zeros(int((~keep).sum())))
    ref, _, _ = reference_joint(W * keep, X, 0.0, grid, 16, 0.01, ~keep)
    assert ((ours.double() - ref).abs() <= 1e-5 * (1 + ref.abs())).float().mean() >= 0.98
    rtn, _ = round_to_nearest(W * keep, grid, keep)
    target = X @ (W * keep).t()
    assert (X @ ours.t() - target).norm() < 0.85 * (X @ rtn.t() - target).norm()


def test_joint_two_four_keeps_the_pattern_and_the_grid():
    torch.manual_seed(2)
    W, X = torch.randn(16, 64), torch.randn(128, 64)
    grid = QuantGrid(4, 32)
    layer = W.clone()
    pruner = SparseGPTPruner(layer, "layer", SparseGPTOptions(blocksize=32))
    pruner.add_batch(X.unsqueeze(0))
    (result,) = SparseGPTPruner.prune_group([pruner], [0.5], SparsityPattern.parse("2:4"), grid)
    assert (result.mask.view(16, 16, 4).sum(dim=2) == 2).all()
    assert torch.equal(layer[~result.mask], torch.zeros(16 * 32))
    q = layer / grid.expand(result.scales, 64)
    assert torch.equal(q, q.round())
