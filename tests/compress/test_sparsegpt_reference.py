"""SparseGPT's values, checked against references that share none of its code.

The row-wise problem: minimise ``(w - ŵ) H (w - ŵ)ᵀ`` with ``ŵ`` zero on the pruned entries,
``H = (2/n) XᵀX + λI`` and ``λ = 1% of mean(diag H)`` (the pruner's damping).

- Closed form: with the kept set ``K``, ``ŵ_K = w H[:, K] H[K, K]⁻¹``. SparseGPT reaches it
  exactly only when every pruned column of a row comes before its kept ones: its OBS update for
  column ``i`` moves only the columns not yet visited (``> i``), so a kept column left of a later
  pruned one is frozen (paper, section 3.2). For any other mask the closed form is a strict lower
  bound on its error, which is checked too.
- Sequential reference (the paper's Algorithm 1, with explicit solves instead of the Cholesky
  trick): visit the columns in order; at a pruned column ``i`` set ``ŵ_i = 0`` and re-solve the
  not-yet-visited columns ``F`` for the least error with the visited ones fixed,
  ``ŵ_F = w_F + H[F, F]⁻¹ H[F, V] (w - ŵ)_V``. The OBS saliency that picks the mask is
  ``ŵ_c² / [H[F_c, F_c]⁻¹]_00`` with ``F_c`` the columns from ``c`` on. Masks and weights must match.
"""

import pytest
import torch

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners import PRUNERS
from compress.core.methods import SparseGPTOptions

ROWS, COLS, TOKENS = 8, 16, 256
PERCDAMP = 0.01


def inputs() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(COLS, COLS, generator=gen) / COLS**0.5
    return torch.randn(TOKENS, COLS, generator=gen) @ mixing + 0.3 * torch.randn(
        TOKENS, COLS, generator=gen
    )


def damped_hessian(X: torch.Tensor) -> torch.Tensor:
    X = X.double()
    H = (2.0 / X.shape[0]) * X.T @ X
    return H + PERCDAMP * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)


def project_sparsegpt(W: torch.Tensor, X: torch.Tensor, pattern: str, blocksize: int = 128):
    """The project's pruner on a ``Linear`` holding ``W``: (pruned weights as float64, mask)."""
    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data.copy_(W)
    pruner = PRUNERS["sparsegpt"](
        layer.weight, "layer", SparseGPTOptions(blocksize=blocksize, percdamp=PERCDAMP)
    )
    for chunk in X.split(64):
        pruner.add_batch(chunk)
    mask = pruner.prune(0.5, SparsityPattern.parse(pattern)).mask
    return layer.weight.detach().double(), mask


def closed_form(W: torch.Tensor, H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Least-squares optimum of every row given its keep-mask."""
    W = W.double()
    out = torch.zeros_like(W)
    for r in range(W.shape[0]):
        kept = mask[r]
        out[r, kept] = torch.linalg.solve(H[kept][:, kept], W[r] @ H[:, kept])
    return out


def saliency_denominators(H: torch.Tensor) -> torch.Tensor:
    """``[H[c:, c:]⁻¹]_00`` for every column ``c``."""
    return torch.stack([torch.linalg.inv(H[c:, c:])[0, 0] for c in range(H.shape[0])])


def eliminate(w_dense: torch.Tensor, w: torch.Tensor, H: torch.Tensor, col: int) -> None:
    """Prune column ``col`` of row ``w`` in place and re-solve the columns after it."""
    w[col] = 0.0
    done, free = slice(0, col + 1), slice(col + 1, None)
    err = w_dense[done] - w[done]
    w[free] = w_dense[free] + torch.linalg.solve(H[free, free], H[free, done] @ err)


def reference_sparsegpt(W: torch.Tensor, H: torch.Tensor, pattern: str, blocksize: int):
    """Algorithm 1 of the paper, written from its definition; returns (weights, keep-mask)."""
    dense = W.double()
    W = dense.clone()
    rows, cols = W.shape
    d = saliency_denominators(H)
    pat = SparsityPattern.parse(pattern)
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        block = slice(start, min(start + blocksize, cols))
        if not pat.structured:  # the lowest half of the whole lazy block, scored at its start
            score = (W[:, block].pow(2) / d[block]).flatten()
            low = torch.topk(score, score.numel() // 2, largest=False).indices
            chosen = torch.zeros(score.numel(), dtype=torch.bool)
            chosen[low] = True
            pruned[:, block] = chosen.reshape(rows, -1)
        for c in range(block.start, block.stop):
            if pat.structured and c % pat.m == 0:  # the M-N lowest of each group, scored on entry
                group = slice(c, c + pat.m)
                score = W[:, group].pow(2) / d[group]
                low = torch.topk(score, pat.m - pat.n, dim=1, largest=False).indices
                pruned[:, group].scatter_(1, low, True)
            for r in range(rows):
                if pruned[r, c]:
                    eliminate(dense[r], W[r], H, c)
    return W, ~pruned


def output_error(W: torch.Tensor, dense: torch.Tensor, H: torch.Tensor) -> float:
    diff = dense.double() - W
    return float(torch.einsum("ri,ij,rj->", diff, H, diff))


def test_equals_closed_form_when_pruned_columns_come_first():
    torch.manual_seed(1)
    W = torch.randn(ROWS, COLS)
    W[:, : COLS // 2] *= 1e-3  # the left half is pruned in every row, before any kept column
    X = inputs()
    pruned, mask = project_sparsegpt(W, X, "unstructured")
    assert not mask[:, : COLS // 2].any() and mask[:, COLS // 2 :].all()
    expected = closed_form(W, damped_hessian(X), mask)
    torch.testing.assert_close(pruned, expected, rtol=1e-4, atol=1e-5)


def test_closed_form_bounds_the_error_for_its_mask():
    torch.manual_seed(1)
    W = torch.randn(ROWS, COLS)
    X = inputs()
    H = damped_hessian(X)
    pruned, mask = project_sparsegpt(W, X, "unstructured")
    optimum = closed_form(W, H, mask)
    assert output_error(optimum, W, H) < output_error(pruned, W, H)
    assert output_error(pruned, W, H) < output_error(W * mask, W, H)  # the update helps


@pytest.mark.parametrize(
    "pattern,blocksize",
    [("unstructured", 128), ("unstructured", 4), ("2:4", 128), ("4:8", 8)],
)
def test_matches_sequential_reference(pattern, blocksize):
    torch.manual_seed(2)
    W = torch.randn(ROWS, COLS)
    X = inputs()
    pruned, mask = project_sparsegpt(W, X, pattern, blocksize)
    expected, expected_mask = reference_sparsegpt(W, damped_hessian(X), pattern, blocksize)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(pruned, expected, rtol=1e-4, atol=1e-5)


def plain_column_loop(W: torch.Tensor, Hinv: torch.Tensor, pattern: str, blocksize: int):
    """The column loop as written before its rework for speed (columns of a row-major copy, one
    ``W1[:, i:] -= err ⊗ h`` per column): the reworked loop must equal it."""
    pat = SparsityPattern.parse(pattern)
    W = W.clone()
    rows, cols = W.shape
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        d2 = Hinv1.diagonal().pow(2)
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if not pat.structured:
            score = (W1.pow(2) / d2).flatten()
            prune1.view(-1)[torch.topk(score, round(0.5 * W1.numel()), largest=False).indices] = 1
        for i in range(i2 - i1):
            if pat.structured and i % pat.m == 0:
                score = W1[:, i : i + pat.m].pow(2) / d2[i : i + pat.m]
                low = torch.topk(score, pat.m - pat.n, dim=1, largest=False).indices
                prune1.scatter_(1, i + low, True)
            err1 = Err1[:, i]
            torch.mul(W1[:, i], prune1[:, i], out=err1)
            err1.div_(Hinv1[i, i])
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
        W[:, i1:i2], pruned[:, i1:i2] = W1, prune1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W * ~pruned, ~pruned


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
@pytest.mark.parametrize(
    ("rows", "cols", "blocksize", "conv1d"),
    [(48, 96, 32, False), (40, 72, 32, True), (40, 72, 32, False), (48, 96, 32, True)],
)
@pytest.mark.parametrize("ties", [False, True])
def test_column_loop_equals_the_plain_loop(pattern, rows, cols, blocksize, conv1d, ties):
    """The column loop was reworked for speed (transposed, views made once per factor, the
    unstructured share found by selection, ties left to ``topk``, rows of ``Hinv`` divided by
    their diagonal once and one fused ``addr_`` per column); the masks are those of the plain
    loop and the weights equal within float32 rounding (the fused update rounds once where the
    plain loop rounds the product and then the difference)."""
    gen = torch.Generator().manual_seed(rows)
    X = torch.randn(4, 64, cols, generator=gen) @ torch.randn(cols, cols, generator=gen)
    X[..., 5] = 0.0  # a dead input column
    W = torch.randn(rows, cols, generator=gen)
    if ties:  # few distinct weights: scores tie across the edge of the pruned share
        W = W.round()
    storage = W.t().contiguous() if conv1d else W.clone()
    weight = storage.t() if conv1d else storage  # a Conv1D's weight is a transposed view
    pruner = PRUNERS["sparsegpt"](
        weight, "layer", SparseGPTOptions(blocksize=blocksize, percdamp=PERCDAMP)
    )
    pruner.add_batch(X)
    dead, Hinv = pruner._factorised()
    start = W.clone()
    start[:, dead] = 0.0
    want_w, want_mask = plain_column_loop(start, Hinv, pattern, blocksize)
    mask = pruner.prune(0.5, SparsityPattern.parse(pattern)).mask
    assert torch.equal(mask, want_mask)
    torch.testing.assert_close(weight, want_w, rtol=1e-5, atol=1e-6)
