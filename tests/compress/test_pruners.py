"""Pruners on a single layer with hand-checkable properties."""

import pytest
import torch

from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners import PRUNERS
from compress.core.methods import MagnitudeOptions, SparseGPTOptions

# the methods that prune (--method none keeps the zeros it finds: tests/compress/test_quantize_cli.py)
PRUNING = sorted(m for m in PRUNERS if m != "none")


def correlated_inputs(tokens: int = 1024, width: int = 64) -> torch.Tensor:
    """Inputs with correlated features and uneven scales (like real activations)."""
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(width, width, generator=gen) / width**0.5
    scales = torch.linspace(0.2, 3.0, width)
    return (
        torch.randn(tokens, width, generator=gen) @ mixing
        + 0.3 * torch.randn(tokens, width, generator=gen)
    ) * scales


def pruned_layer(method: str, pattern: str, sparsity: float = 0.5):
    torch.manual_seed(1)
    layer = torch.nn.Linear(64, 32, bias=False)
    dense = layer.weight.detach().clone()
    X = correlated_inputs()
    pruner = PRUNERS[method](layer.weight, "layer")
    for chunk in X.split(256):
        pruner.add_batch(chunk.reshape(4, 64, 64))
    result = pruner.prune(sparsity, SparsityPattern.parse(pattern))
    return layer, dense, X, result


def output_error(layer, dense, X) -> float:
    return float(torch.linalg.norm(X @ dense.T - X @ layer.weight.detach().T))


@pytest.mark.parametrize("method", PRUNING)
def test_unstructured_exact_sparsity_and_zeros(method):
    layer, _, _, result = pruned_layer(method, "unstructured", 0.5)
    weight = layer.weight.detach()
    assert (weight == 0).sum() == weight.numel() // 2
    assert torch.equal(weight != 0, result.mask)
    if method == "wanda":  # Wanda compares within each output row
        assert (result.mask.sum(dim=1) == 32).all()


@pytest.mark.parametrize("method", PRUNING)
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_n_m_per_group(method, pattern):
    n, m = map(int, pattern.split(":"))
    layer, _, _, result = pruned_layer(method, pattern)
    groups = (layer.weight.detach() != 0).reshape(32, -1, m)
    assert (groups.sum(dim=2) == n).all()
    assert (result.mask.reshape(32, -1, m).sum(dim=2) == n).all()


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_error_lowest(pattern):
    errors = {m: output_error(*pruned_layer(m, pattern)[:3]) for m in PRUNING}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


def test_wanda_score_uses_input_norms():
    layer = torch.nn.Linear(2, 1, bias=False)
    layer.weight.data = torch.tensor([[1.0, 2.0]])
    pruner = PRUNERS["wanda"](layer.weight)
    pruner.add_batch(torch.tensor([[10.0, 1.0]]))  # |w|*||x||: 10 vs 2 -> keep the first
    pruner.prune(0.5, SparsityPattern())
    assert layer.weight.tolist() == [[1.0, 0.0]]


def test_sparsegpt_dead_inputs_and_retry():
    layer = torch.nn.Linear(8, 4, bias=False)
    pruner = PRUNERS["sparsegpt"](layer.weight)
    x = torch.randn(3, 8)
    x[:, 5] = 0  # a dead input and a rank-deficient Hessian (3 tokens, 8 features)
    pruner.add_batch(x)
    result = pruner.prune(0.5, SparsityPattern())
    assert torch.isfinite(layer.weight).all()
    assert layer.weight[:, 5].abs().sum() == 0
    assert result.mask.sum() == 16


def scaled_rows() -> torch.nn.Linear:
    layer = torch.nn.Linear(4, 2, bias=False)
    layer.weight.data = torch.tensor([[1.0, -2.0, 3.0, 4.0], [10.0, 20.0, -30.0, 40.0]])
    return layer


def test_magnitude_default_is_one_threshold_per_layer():
    layer = scaled_rows()
    PRUNERS["magnitude"](layer.weight).prune(0.5, SparsityPattern())
    assert layer.weight.tolist() == [[0.0, 0.0, 0.0, 0.0], [10.0, 20.0, -30.0, 40.0]]


def test_magnitude_per_row_on_request():
    layer = scaled_rows()
    options = MagnitudeOptions(scope="row")
    PRUNERS["magnitude"](layer.weight, "layer", options).prune(0.5, SparsityPattern())
    assert layer.weight.tolist() == [[0.0, 0.0, 3.0, 4.0], [0.0, 0.0, -30.0, 40.0]]


def test_recipe_names_the_magnitude_scope():
    from compress.core.config import PruneConfig, PrunerOptions
    from compress.core.errors import BadInputError

    def scope(config: PruneConfig) -> str:
        return config.to_dict()["pruner"]["magnitude"]["scope"]

    assert scope(PruneConfig(method="magnitude")) == "layer"
    row = PruneConfig(
        method="magnitude", pruner=PrunerOptions(magnitude=MagnitudeOptions(scope="row"))
    )
    assert scope(row) == "row" and row.pruner_options() == MagnitudeOptions(scope="row")
    assert scope(PruneConfig(method="wanda")) == "layer"  # the default: changes nothing
    with pytest.raises(
        BadInputError, match="^--magnitude-scope applies to --method magnitude only$"
    ):
        PruneConfig(method="wanda", pruner=PrunerOptions(magnitude=MagnitudeOptions(scope="row")))


def test_every_method_has_one_pruner_built_with_its_options():
    from compress.core.config import Method
    from compress.core.methods import METHODS

    assert list(METHODS) == [m.value for m in Method] and set(PRUNERS) == set(METHODS)
    for name, cls in PRUNERS.items():
        assert cls.options is METHODS[name]


def test_sparsegpt_takes_its_block_size_and_damping_from_its_options():
    pruner = PRUNERS["sparsegpt"](
        torch.zeros(4, 8), "layer", SparseGPTOptions(blocksize=16, percdamp=0.1)
    )
    assert (pruner.blocksize, pruner.percdamp) == (16, 0.1)
    default = PRUNERS["sparsegpt"](torch.zeros(4, 8), "layer")
    assert (default.blocksize, default.percdamp) == (128, 0.01)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_statistics_do_not_depend_on_batching_or_threads(method, dtype):
    """Float32 terms per sequence (float64 ones cost as much as a forward; bfloat16
    Gram products for bfloat16 inputs on a CPU with bfloat16 instructions, float32 ones on a CPU
    that would emulate them) keep the promise of compress.algorithms.distributed: the
    same sums however the sequences are batched or split among ranks, and whatever the thread
    count, at the embedded model's widths."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(6, 512, 1536, generator=gen) * torch.rand(1536, generator=gen) * 4
    inputs = inputs.to(dtype)
    threads = torch.get_num_threads()
    values = []
    for count, cuts in [(1, [6]), (2, [6]), (2, [2, 1, 3]), (1, [1] * 6)]:
        torch.set_num_threads(count)
        try:
            pruner = PRUNERS[method](torch.zeros(4, 1536), "layer")
            for part in inputs.split(cuts):
                pruner.add_batch(part)
        finally:
            torch.set_num_threads(threads)
        values.append([total.value() for total in pruner.statistics()])
    for other in values[1:]:
        for got, want in zip(other, values[0]):
            assert torch.equal(got, want)


def test_sparsegpt_bfloat16_statistics_stay_within_bfloat16_rounding(monkeypatch):
    """bfloat16 inputs on a CPU with bfloat16 instructions: each sequence's Gram
    product runs in bfloat16; every entry of its term stays within 2^-8 (bfloat16's unit
    roundoff) of the float32 term's sum of ``|x_i x_j|``; the float32 reference it is measured
    against gives the same sums batched or one sequence at a time."""
    from compress.algorithms.pruners import sparsegpt
    from compress.algorithms.pruners.sparsegpt import gram_dtype

    monkeypatch.setattr(sparsegpt, "emulated_on_this_cpu", lambda dtype: False)
    gen = torch.Generator().manual_seed(5)
    inputs = torch.randn(4, 512, 576, generator=gen) * torch.rand(576, generator=gen) * 4
    inputs = inputs.bfloat16()
    assert gram_dtype(inputs) == torch.bfloat16 and gram_dtype(inputs.float()) == torch.float32
    fast = PRUNERS["sparsegpt"](torch.zeros(4, 576), "layer")
    fast.add_batch(inputs)
    exact = PRUNERS["sparsegpt"](torch.zeros(4, 576), "layer")
    exact.add_batch(inputs.float())
    got, want = summed_gram(fast), summed_gram(exact)
    magnitudes = sum(x.abs().t().double() @ x.abs().double() for x in inputs.float()).tril()
    assert ((got - want).abs() <= magnitudes * 2.0**-8).all()
    assert not torch.equal(got, want)  # the bfloat16 product did run
    again = PRUNERS["sparsegpt"](torch.zeros(4, 576), "layer")
    for x in inputs.float():
        again.add_batch(x)
    assert torch.equal(summed_gram(again), want)


def test_a_cpu_that_emulates_bfloat16_multiplies_the_gram_terms_in_float32(monkeypatch):
    from compress.algorithms.pruners import sparsegpt

    monkeypatch.setattr(sparsegpt, "emulated_on_this_cpu", lambda dtype: dtype is torch.bfloat16)
    assert sparsegpt.gram_dtype(torch.zeros(2, 8, dtype=torch.bfloat16)) == torch.float32


def test_sparsegpt_sums_half_of_each_term_and_factorises_the_same():
    """Only the lower triangle of ``x^T x`` is summed (half the exact-sum work); the
    Cholesky factor reads only that triangle, so it equals the full matrix's bit for bit."""
    from compress.algorithms.distributed import ExactSum

    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(3, 40, 24, generator=gen) * torch.rand(24, generator=gen)
    pruner = PRUNERS["sparsegpt"](torch.randn(8, 24, generator=gen), "layer")
    pruner.add_batch(inputs)
    full = ExactSum((24, 24), torch.device("cpu"))
    for x in inputs:
        full.add_(x.t() @ x)
    half = summed_gram(pruner)
    assert torch.equal(half, full.value().tril())
    scale = 2.0 / (3 * 40)
    H = pruner._hessian()
    assert torch.equal(H, H.t())
    damped = (full.value() * scale).float() + torch.eye(24)
    assert torch.equal(torch.linalg.cholesky(H + torch.eye(24)), torch.linalg.cholesky(damped))
    assert pruner.xxt.hi.numel() == 24 * 25 // 2


def summed_gram(pruner) -> torch.Tensor:
    """A SparseGPT pruner's summed ``x^T x`` (float64, its lower triangle; zeros above)."""
    from compress.algorithms.pruners.sparsegpt import unpack_lower_gram

    return unpack_lower_gram(pruner.xxt.value(), pruner.weight.shape[1])


@pytest.mark.parametrize("cols", [24, 300, 700])
def test_sparsegpt_hessian_is_the_float64_formula_rounded_without_its_copies(cols, monkeypatch):
    """The float32 Hessian, built in chunks from the packed sums (scratch-free), equals bit for
    bit the former construction: the float64 sum mirrored, scaled by 2/n, then rounded; and the
    score's diagonal is that of the float64 sum. Chunks far smaller than the sum are taken here
    so that several are visited."""
    from compress.algorithms import distributed

    monkeypatch.setattr(distributed, "SUM_CHUNK", 1000)
    gen = torch.Generator().manual_seed(cols)
    pruner = PRUNERS["sparsegpt"](torch.randn(8, cols, generator=gen), "layer")
    for _ in range(3):
        pruner.add_batch(torch.randn(2, 50, cols, generator=gen) * torch.rand(cols, generator=gen))
    lower = summed_gram(pruner)
    former = torch.where(torch.ones(cols, cols, dtype=torch.bool).tril(), lower, lower.t())
    want = (former * (2.0 / (3 * 2 * 50))).float()
    assert torch.equal(pruner._hessian(), want)
    norms = former.diagonal().float().sqrt()
    assert torch.equal(pruner.scores(), pruner.weight.abs().float() * norms.unsqueeze(0))


@pytest.mark.parametrize(("tokens", "cols"), [(40, 24), (77, 300), (512, 576), (512, 1536)])
def test_sparsegpt_gram_bands_equal_the_full_product(tokens, cols):
    """SparseGPT's ``x^T x`` term is computed band by band below the diagonal (5/8 of
    the work at the embedded model's MLP width); it packs the very values of the full product's
    lower triangle, one each."""
    from compress.algorithms.pruners.sparsegpt import lower_gram, unpack_lower_gram

    gen = torch.Generator().manual_seed(cols)
    x = torch.randn(tokens, cols, generator=gen) * torch.rand(cols, generator=gen) * 4
    full = (x.t() @ x).tril()
    packed = lower_gram(x)
    assert packed.numel() == cols * (cols + 1) // 2
    assert torch.equal(
        unpack_lower_gram(torch.arange(1.0, packed.numel() + 1), cols).count_nonzero(),
        torch.tensor(packed.numel()),
    )
    packed = unpack_lower_gram(packed, cols)
    torch.testing.assert_close(packed, full, rtol=1e-5, atol=1e-4)
    if not torch.backends.mkl.is_available():
        pytest.skip("bit-for-bit equality measured with MKL's products only")
    assert torch.equal(packed, full)
