import pytest
import torch

from compress.algorithms.masks import (
    SparsityPattern,
    layerwise_mask,
    measured_sparsity,
    n_m_mask,
    rowwise_mask,
)
from compress.core.errors import BadInputError


def test_rowwise_mask_drops_lowest_per_row():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.5, 0.7, 0.1, 0.9]])
    mask = rowwise_mask(score, 0.5)
    assert mask.tolist() == [[True, False, True, False], [False, True, False, True]]


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7, 0.9])
def test_rowwise_mask_exact_per_row(sparsity):
    score = torch.rand(16, 40)
    mask = rowwise_mask(score, sparsity)
    assert (mask.sum(dim=1) == 40 - round(sparsity * 40)).all()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_n_m_mask_keeps_n_per_group(n, m):
    score = torch.rand(8, 32)
    mask = n_m_mask(score, n, m)
    assert (mask.reshape(8, -1, m).sum(dim=2) == n).all()
    kept = score.reshape(8, -1, m)[mask.reshape(8, -1, m)].reshape(8, -1, n)
    dropped = score.reshape(8, -1, m)[~mask.reshape(8, -1, m)].reshape(8, -1, m - n)
    assert (kept.min(dim=2).values >= dropped.max(dim=2).values).all()


def test_pattern_parse():
    assert str(SparsityPattern.parse("unstructured")) == "unstructured"
    pattern = SparsityPattern.parse("2:4")
    assert (pattern.n, pattern.m, pattern.sparsity) == (2, 4, 0.5)


@pytest.mark.parametrize("text", ["4:4", "5:4", "0:4", "2-4", "half"])
def test_pattern_parse_rejects(text):
    with pytest.raises(BadInputError):
        SparsityPattern.parse(text)


def test_width_not_divisible_by_m():
    with pytest.raises(BadInputError, match="not divisible by M=8"):
        SparsityPattern.parse("4:8").check_width(36, "model.layers.0.mlp.down_proj")


def test_measured_sparsity():
    assert measured_sparsity(torch.tensor([[0.0, 1.0], [0.0, 0.0]])) == 0.75


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_layerwise_mask_one_threshold_exact_count(sparsity):
    score = torch.rand(16, 24, generator=torch.Generator().manual_seed(0))
    mask = layerwise_mask(score, sparsity)
    assert (~mask).sum() == round(sparsity * score.numel())
    if 0 < sparsity:
        assert score[~mask].max() <= score[mask].min()


def test_masks_from_zeros_keep_nonzeros_of_weights_holding_zeros():
    from compress.algorithms.masks import masks_from_zeros, zero_count

    sparse = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    dense = torch.ones(2, 2)
    masks = masks_from_zeros([sparse, dense])
    assert list(masks) == [sparse]  # a weight without exact zeros gets no mask
    assert torch.equal(masks[sparse], torch.tensor([[False, True], [True, False]]))
    assert zero_count(sparse) == 2 and zero_count(dense) == 0


def test_rowwise_mask_exact_per_layer():
    # 0.45 of 4 x 10: 18 zeros, not 4 x round(4.5) = 16; the two extra go to the rows whose
    # fifth-lowest score is lowest (rows 2 and 0 here)
    score = torch.arange(40.0).reshape(4, 10)
    score[2] -= 100
    score[0, 4] = -50
    mask = rowwise_mask(score, 0.45)
    assert int((~mask).sum()) == 18
    assert (~mask).sum(dim=1).tolist() == [5, 4, 5, 4]
    assert not mask[0, 4] and not mask[2, :5].any()


def test_zero_count_allocates_no_weight_sized_temporary():
    from compress.algorithms.masks import zero_count
    from tests.allocations import largest_allocation

    weight = torch.randn(2048, 1024, generator=torch.Generator().manual_seed(0))
    weight[::3] = 0.0
    weight[1, 1], weight[2, 2] = -0.0, float("nan")  # -0.0 is a zero, NaN is not
    assert zero_count(weight) == 683 * 1024 + 1
    assert largest_allocation(lambda: zero_count(weight)) <= weight.numel() * 4 // 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_zero_count_counts_both_zeros_in_every_dtype(dtype):
    """Counted on the bits without the sign (float64 by ``count_nonzero``): +0 and -0 are zeros;
    NaN, infinities and the smallest subnormal are not."""
    from compress.algorithms.masks import zero_count

    values = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1.0, -2.0]
    weight = torch.tensor(values * 100_000, dtype=dtype)  # more than one part of 2^18
    tiny = torch.finfo(dtype).smallest_normal / 2  # a subnormal: nonzero bits below the exponent
    weight[-1] = -tiny
    assert zero_count(weight) == 200_000
    assert zero_count(weight.view(1400, 500)[:, ::2]) == int(
        (weight.view(1400, 500)[:, ::2] == 0).sum()
    )


def stable_rowwise_reference(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Each row drops its lowest by a stable sort (lower column first among equals); the extra
    drops go to the rows whose next-lowest score is lowest."""
    rows, cols = score.shape
    base, extra = divmod(int(round(sparsity * score.numel())), rows)
    order = torch.sort(score, dim=1, stable=True).indices
    drops = torch.full((rows,), base)
    if extra:
        next_lowest = score.gather(1, order[:, base : base + 1]).squeeze(1)
        drops[torch.topk(next_lowest, extra, largest=False).indices] += 1
    mask = torch.ones_like(score, dtype=torch.bool)
    for row in range(rows):
        mask[row, order[row, : drops[row]]] = False
    return mask


@pytest.mark.parametrize("sparsity", [0.05, 0.5, 0.73, 1.0])
def test_rowwise_mask_breaks_ties_as_a_stable_sort(sparsity):
    # few distinct values: most rows have many ties at their threshold
    score = torch.randint(0, 5, (64, 37), generator=torch.Generator().manual_seed(2)).float()
    score[:, 0] = 7.0  # distinct next-lowest scores for the extra drops
    score[:, 0] += torch.arange(64) / 64
    mask = rowwise_mask(score, sparsity)
    assert int((~mask).sum()) == round(sparsity * score.numel())
    assert torch.equal(mask, stable_rowwise_reference(score, sparsity))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (3, 8), (2, 16)])
def test_n_m_mask_breaks_ties_as_a_stable_sort(n, m):
    score = torch.randint(0, 3, (16, 64), generator=torch.Generator().manual_seed(3)).float()
    groups = score.reshape(16, -1, m)
    keep = torch.sort(groups, dim=2, descending=True, stable=True).indices[..., :n]
    expected = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
    assert torch.equal(n_m_mask(score, n, m), expected.reshape(16, 64))
