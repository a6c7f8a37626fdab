"""SparseGPT (Frantar & Alistarh, arXiv 2301.00774, Algorithm 1).

Symbols, as in the paper:
    H       Hessian of the layer-wise loss, ``(2/n) * sum_tokens x x^T``   (in, in)
            (one float32 term per sequence, bfloat16 for a bfloat16 model on a CPU
            (:func:`gram_dtype`), added in an ExactSum, so ``H`` is the same however the
            sequences were cut into batches and ranks; see
            :class:`compress.algorithms.distributed.ExactSum`)
    Hinv    upper Cholesky factor of ``H^-1``                                (in, in)
    WT      weights being pruned, float32 copy, transposed                   (in, out)
    Err1    scaled errors ``(w - q) / [Hinv]_cc`` of one lazy block          (blocksize, out)

The columns are visited in lazy blocks of ``blocksize``. Inside a block the mask is chosen by
``w^2 / [Hinv]_cc^2`` (unstructured: the lowest ``s`` share of the whole block; N:M: the M-N
lowest per row every M columns), and each pruned weight's error is pushed into the columns not
yet visited (the OBS update), so the kept weights compensate. Damping starts at
``percdamp * mean(diag H)`` and grows tenfold on a failed Cholesky.

Speed: the loop issues a few ops per column, so it runs on the transpose (a column
is a contiguous row, the columns left in a block one contiguous slice) with the views it needs
made once per factor; the ops and their order are those of the row-major loop, so masks and
weights are the same bit for bit (tests/compress/test_sparsegpt_reference.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import accumulate

import torch

from compress.algorithms.distributed import ExactSum
from compress.algorithms.masks import SparsityPattern
from compress.algorithms.pruners.base import Pruner, PruneResult, register, sequences
from compress.algorithms.quant.grid import QuantGrid
from compress.core.dtypes import emulated_on_this_cpu
from compress.core.errors import NumericsError
from compress.core.methods import SparseGPTOptions

MAX_DAMPING_TRIES = 5
# The share of a block forward's flops per second :meth:`SparseGPTPruner.work` reaches (the
# run's estimate): the factorisations (LAPACK) and the column loop's many small ops run below
# the forward's large matrix products. Fitted to a 7B-shaped run on a CPU (docs/results.md,
# the Llama-2-7B shape against llm-compressor).
WORK_EFFICIENCY = 0.4


def column_loop_threads(cores: int, load: float, allowed: int) -> int:
    """Threads for the column loop on a CPU: the cores the rest of the machine leaves idle.

    The loop issues thousands of tiny ops; threads the machine cannot give it stall every op
    on OpenMP start-up (docs/results.md has the cost on a loaded machine), while on a free
    machine the extra cores help. ``load`` is the 1-minute load average, which counts this run
    itself (busy in the forward passes just before): the others' load is ``load - 1``. Results
    do not depend on the count (tests/compress/test_siblings.py)."""
    others = max(load - 1.0, 0.0)
    return max(1, min(allowed, cores - round(others)))


@contextmanager
def _threads_for_column_loop(device: torch.device) -> Iterator[None]:
    """Run the column loop with :func:`column_loop_threads` threads on a CPU."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(column_loop_threads(os.cpu_count() or 1, os.getloadavg()[0], threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gram_dtype(inp: torch.Tensor) -> torch.dtype:
    """The dtype each sequence's ``x^T x`` is multiplied in: bfloat16 for bfloat16 inputs on a
    CPU, float32 otherwise.

    Why: a CPU has no bfloat16 x bfloat16 -> float32 product in torch, and the float32 one
    costs more than the bfloat16 one at the embedded model's MLP width (docs/results.md).
    Inputs in bfloat16 are already rounded to 8 bits, and each product of two is exact; the
    bfloat16 product rounds its partial sums to bfloat16, which leaves each entry of a
    sequence's term within 2^-8 (bfloat16's unit roundoff) of ``sum_tokens |x_i x_j|`` of the
    float32 one (measured; tests/compress/test_pruners.py). The sums over sequences stay exact
    (:class:`ExactSum`). A float32 model keeps float32 statistics, and so does a CPU that would
    emulate the bfloat16 product (AVX2 only: there it is tens of times slower than float32,
    :func:`~compress.core.dtypes.emulated_on_this_cpu`).
    """
    cpu_bf16 = inp.dtype == torch.bfloat16 and inp.device.type == "cpu"
    return (
        torch.bfloat16 if cpu_bf16 and not emulated_on_this_cpu(torch.bfloat16) else torch.float32
    )


GRAM_ROWS = 256  # rows of x^T x per product in :func:`lower_gram`


@lru_cache(maxsize=4)
def _lower_triangle(cols: int, device: torch.device) -> torch.Tensor:
    """Bool ``(cols, cols)``: True on and below the diagonal."""
    return torch.ones(cols, cols, dtype=torch.bool, device=device).tril()


@lru_cache(maxsize=4)
def _gram_plan(cols: int, device: torch.device) -> tuple[tuple[int, int, torch.Tensor], ...]:
    """Row bands ``[start, stop)`` of ``x^T x`` and, per band, the flat positions in its
    ``(stop - start, stop)`` product of its diagonal block's entries on or below the diagonal,
    row by row (small: about ``GRAM_ROWS / 2`` per column)."""
    bands = -(-cols // GRAM_ROWS)
    edges = [cols * b // bands for b in range(bands + 1)]
    plan = []
    for start, stop in zip(edges, edges[1:]):
        rows = torch.arange(stop - start, device=device).unsqueeze(1)
        within = torch.arange(stop - start, device=device).unsqueeze(0)
        plan.append((start, stop, (rows * stop + start + within)[within <= rows]))
    return tuple(plan)


def lower_gram(x: torch.Tensor) -> torch.Tensor:
    """The lower triangle of ``x^T x`` (``x``: ``(tokens, cols)``), computed band by band: each
    band of rows is multiplied only with the columns up to its diagonal (5/8 of the full
    product's work for four bands). Packed band after band, each as its rectangle left of the
    diagonal block, row-major, then that block's lower triangle, row by row
    (:func:`unpack_lower_gram` undoes it). Each entry is the same dot product over the tokens as
    in the full product (equal bit for bit with MKL, tests/compress/test_pruners.py), and the
    same per sequence however the sequences are batched."""
    cols = x.shape[1]
    packed = torch.empty(cols * (cols + 1) // 2, dtype=x.dtype, device=x.device)
    offset = 0
    for start, stop, triangle in _gram_plan(cols, x.device):
        band = x[:, start:stop].t() @ x[:, :stop]
        rect = (stop - start) * start
        packed[offset : offset + rect].view(stop - start, start).copy_(band[:, :start])
        offset += rect
        torch.index_select(band.view(-1), 0, triangle, out=packed[offset : offset + len(triangle)])
        offset += len(triangle)
    return packed


def unpack_lower_gram(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """``(cols, cols)``: the lower triangle :func:`lower_gram` packed, zeros above it."""
    full = torch.zeros(cols, cols, dtype=packed.dtype, device=packed.device)
    offset = 0
    for start, stop, triangle in _gram_plan(cols, packed.device):
        rows = stop - start
        full[start:stop, :start] = packed[offset : offset + rows * start].view(rows, start)
        offset += rows * start
        block = torch.zeros(rows, rows, dtype=packed.dtype, device=packed.device)
        local = triangle // stop * rows + triangle % stop - start
        block.view(-1)[local] = packed[offset : offset + len(triangle)]
        full[start:stop, start:stop] = block
        offset += len(triangle)
    return full


def _mirror_lower_(H: torch.Tensor) -> None:
    """Copy the lower triangle of square ``H`` onto its upper one, in place, band by band (no
    second full matrix)."""
    cols = H.shape[0]
    for start in range(0, cols, GRAM_ROWS):
        stop = min(start + GRAM_ROWS, cols)
        H[start:stop, stop:] = H[stop:, start:stop].t()
        block = H[start:stop, start:stop]
        block.copy_(torch.where(_lower_triangle(stop - start, H.device), block, block.t()))


@lru_cache(maxsize=4)
def _packed_diagonal(cols: int, device: torch.device) -> torch.Tensor:
    """Positions of the diagonal entries in :func:`lower_gram`'s packing, in column order."""
    positions, offset = [], 0
    for start, stop, triangle in _gram_plan(cols, device):
        rows = torch.arange(stop - start, device=device)
        positions.append(offset + (stop - start) * start + rows * (rows + 1) // 2 + rows)
        offset += (stop - start) * start + len(triangle)
    return torch.cat(positions)


@register(SparseGPTOptions)
class SparseGPTPruner(Pruner):
    shares = ("xxt", "count", "factor")
    gram_bytes = 8  # H's packed lower triangle in float64 with its compensation (ExactSum)

    def __init__(
        self, weight: torch.Tensor, name: str = "layer", options: SparseGPTOptions | None = None
    ) -> None:
        super().__init__(weight, name)
        options = options or SparseGPTOptions()
        self.blocksize = options.blocksize  # --sparsegpt-blocksize
        self.percdamp = options.percdamp  # --sparsegpt-damp
        cols = weight.shape[1]
        self.xxt = ExactSum((cols * (cols + 1) // 2,), weight.device)  # lower triangle, packed
        self.count = ExactSum((), weight.device)
        self.factor: dict[str, torch.Tensor] = {}  # dead columns and Hinv, once per statistics

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor) -> None:
        tokens = 0
        inp = inp.to(self.weight.device)
        for x in sequences(inp, gram_dtype(inp)):
            self.xxt.add_(lower_gram(x))  # one sequence at a time, summed in float64
            tokens += x.shape[0]
        self.count.add_(torch.tensor(float(tokens)))  # integers: exact in any order
        self.nsamples += tokens

    def statistics(self) -> list[ExactSum]:
        return [self.xxt, self.count]

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        """Wanda's ``|W|·‖X‖``: ``‖X_j‖²`` is the diagonal of ``X^T X``."""
        at = _packed_diagonal(self.weight.shape[1], self.weight.device)
        norms = (self.xxt.hi[at] + self.xxt.lo[at]).float().sqrt()
        return self.weight.abs().float() * norms.unsqueeze(0)

    def _hessian(self) -> torch.Tensor:
        """``H = (2/n) sum x x^T`` in float32, mirrored from its summed lower triangle (the
        Cholesky factorisation reads the lower triangle only, so summing half of each term
        changes no bit of the result). Each entry is rounded from its float64 sum as a whole
        float64 matrix would give it, without one (:meth:`ExactSum.value` works in chunks): a
        float64 copy of a 7B MLP's Hessian would be 0.97 GB, each."""
        scale = 2.0 / max(float(self.count.value()), 1.0)
        packed = self.xxt.value(scale, torch.float32)
        H = unpack_lower_gram(packed, self.weight.shape[1])
        del packed
        _mirror_lower_(H)
        return H

    def _inverse_hessian_factor(self, H: torch.Tensor) -> torch.Tensor:
        """Upper Cholesky factor of ``H^-1``, raising the damping until it succeeds. ``H``'s
        diagonal is damped in place (each try from the undamped one kept aside), so no second
        copy of ``H`` is made, and each factor is released once the next one is made."""
        undamped = H.diagonal().clone()
        damp = self.percdamp * undamped.mean()
        for _ in range(MAX_DAMPING_TRIES):
            H.diagonal().copy_(undamped + damp)
            L, info = torch.linalg.cholesky_ex(H)
            if info == 0:
                Hinv = torch.cholesky_inverse(L)
                del L
                U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
                if info == 0:
                    return U
                del Hinv, U
            damp = damp * 10
        raise NumericsError(
            f"{self.name}: Hessian is not positive definite even with damping {damp / 10:.3g}; "
            f"use more calibration samples or --method wanda for this model"
        )

    @torch.no_grad()
    def prune(self, sparsity: float, pattern: SparsityPattern) -> PruneResult:
        return self.prune_group([self], [sparsity], pattern)[0]

    @classmethod
    @torch.no_grad()
    def prune_group(
        cls,
        pruners: list[Pruner],
        sparsities: list[float],
        pattern: SparsityPattern,
        grid: QuantGrid | None = None,
    ) -> list[PruneResult]:
        """Siblings (one factor, shared) in one column loop: their transposed weights side by
        side, each a segment of the rows with its own mask. OBS updates each output row on its
        own, so the weights are those of one loop per layer (within float rounding) and the
        masks the same; the loop's cost is mostly the ops it dispatches per column, so q/k/v
        take one loop instead of three, gate/up one instead of two. Each layer's seconds are
        the loop's, shared by rows. With ``grid``, the kept weights are quantized in the same
        loop (joint pruning and quantization, the paper's section on joint compression)."""
        return cls._run_loop(pruners, sparsities, pattern, None, grid)

    @classmethod
    @torch.no_grad()
    def quantize_group(
        cls, pruners: list[Pruner], keeps: list[torch.Tensor], grid: QuantGrid
    ) -> list[PruneResult]:
        """GPTQ with the masks held fixed: each layer's kept weights (``keeps``, bool,
        weight-shaped) quantized to ``grid`` column by column, each column's error pushed into
        the columns not yet visited; pruned weights stay exactly zero."""
        fixed = torch.cat([~keep.t() for keep in keeps], dim=1)
        return cls._run_loop(pruners, [0.0] * len(pruners), SparsityPattern(), fixed, grid)

    @classmethod
    def _run_loop(
        cls,
        pruners: list[Pruner],
        sparsities: list[float],
        pattern: SparsityPattern,
        fixed: torch.Tensor | None,
        grid: QuantGrid | None,
    ) -> list[PruneResult]:
        start = time.perf_counter()
        leader = pruners[0]
        # the transpose, contiguous: each input column is one contiguous row of WT, and the
        # columns not yet visited in a lazy block are one contiguous slice
        WT = torch.cat([p.weight.detach().t().float() for p in pruners], dim=1)
        edges = [0, *accumulate(p.weight.shape[0] for p in pruners)]
        segments = list(zip(edges, edges[1:], sparsities))
        with _threads_for_column_loop(leader.weight.device):
            prunedT, scales = leader._column_loop(WT, segments, pattern, fixed, grid)
        masks = []
        for p, (first, last, _) in zip(pruners, segments):
            masks.append(~prunedT[:, first:last].t())
            p.weight.data.copy_((WT[:, first:last].t() * masks[-1]).to(p.weight.dtype))
        seconds = time.perf_counter() - start
        return [
            PruneResult(
                mask,
                seconds * (last - first) / edges[-1],
                None if scales is None else scales[first:last].clone(),
            )
            for mask, (first, last, _) in zip(masks, segments)
        ]

    def _factorised(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dead input columns, ``Hinv``): computed by the first sibling to prune, then reused
        (siblings share ``self.factor`` with their statistics)."""
        if not self.factor:
            H = self._hessian()
            self.xxt.free()  # the float64 sums (twice H's bytes) are spent; siblings share H's factor
            dead = H.diagonal() == 0
            H[dead, dead] = 1.0
            self.factor.update(dead=dead, hinv=self._inverse_hessian_factor(H))
        return self.factor["dead"], self.factor["hinv"]

    def _columns(self, Hinv: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``Hinv`` with each row divided by its diagonal entry, and per column ``c`` of its lazy
        block ``[i1, i2)`` that scaled row's ``[c, c:i2]``, the column that spreads its error, as
        views made once per factor (siblings and every block reuse them: the loop's cost is
        mostly the ops it dispatches per column).

        Why scaled: OBS pushes ``(w_c - q_c) / [Hinv]_cc · Hinv[c, c:]`` into the columns not yet
        visited; folding the division into the row once per factor leaves two ops per column
        (the error, then one fused outer-product update, ``addr_``) instead of four, which the
        loop's time follows (docs/results.md)."""
        if "columns" not in self.factor:
            cols = Hinv.shape[0]
            scaled = Hinv / Hinv.diagonal().unsqueeze(1)
            ends = [min((c // self.blocksize + 1) * self.blocksize, cols) for c in range(cols)]
            spread = [scaled[c, c : ends[c]] for c in range(cols)]
            self.factor.update(scaled=scaled, columns=spread)
        return self.factor["scaled"], self.factor["columns"]

    def _column_loop(
        self,
        WT: torch.Tensor,
        segments: list[tuple[int, int, float]],
        pattern: SparsityPattern,
        fixed: torch.Tensor | None = None,
        grid: QuantGrid | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """OBS over the columns of ``WT`` (``(cols, rows)``, updated in place); ``segments``:
        ``(first, last, sparsity)`` per layer, the rows an unstructured mask is chosen over.
        ``fixed``: the pruned positions, ``WT``-shaped, instead of choosing them. ``grid``: the
        kept weights quantized too, each group's float16 scales taken from its kept weights
        (those of its columns whose mask is chosen by then) when the loop reaches its first
        column, as GPTQ does. Returns the pruned positions, ``WT``-shaped, and the scales
        ``(rows, groups)`` (None without ``grid``)."""
        cols, rows = WT.shape
        dead, Hinv = self._factorised()
        scaled, spread = self._columns(Hinv)
        WT[dead] = 0.0
        prunedT = fixed.clone() if fixed is not None else torch.zeros_like(WT, dtype=torch.bool)
        group = grid.group_of(cols) if grid is not None else 0
        scales = None
        if grid is not None:
            scales = torch.empty(rows, cols // group, dtype=torch.float16, device=WT.device)
            scale = torch.empty(rows, device=WT.device)

        for i1 in range(0, cols, self.blocksize):
            i2 = min(i1 + self.blocksize, cols)
            W1, prune1 = WT[i1:i2], prunedT[i1:i2]  # (count, rows) views, updated in place
            Err1 = torch.empty_like(W1)  # every row written below: w - q, undivided
            d2 = Hinv.diagonal()[i1:i2].pow(2)
            if fixed is None and not pattern.structured:
                for first, last, sparsity in segments:
                    prune1[:, first:last] = self._block_mask(W1[:, first:last], d2, sparsity)
            w_rows, err_rows, prune_rows = W1.unbind(), Err1.unbind(), prune1.unbind()
            for i in range(i2 - i1):
                if fixed is None and pattern.structured and i % pattern.m == 0:
                    score = W1[i : i + pattern.m].t().pow(2) / d2[i : i + pattern.m]
                    low = torch.topk(score, pattern.m - pattern.n, dim=1, largest=False).indices
                    prune1[i : i + pattern.m].t().scatter_(1, low, True)
                err1 = err_rows[i]  # w - q: w where pruned, else 0 (unquantized)
                if grid is None:
                    torch.mul(w_rows[i], prune_rows[i], out=err1)
                    W1[i:].addr_(spread[i1 + i], err1, alpha=-1.0)
                    continue
                c = i1 + i
                if c % group == 0:
                    kept = WT[c : c + group] * ~prunedT[c : c + group]
                    scales[:, c // group] = grid.scales(kept.t())
                    scale.copy_(scales[:, c // group])
                q = grid.quantize(w_rows[i], scale).masked_fill_(prune_rows[i], 0.0)
                torch.sub(w_rows[i], q, out=err1)
                W1[i:].addr_(spread[i1 + i], err1, alpha=-1.0)
                w_rows[i].copy_(q)  # exactly its grid value (the update above left w - err)
            # kept weights are q already (their error is 0); pruned ones ~0, zeroed by the mask
            WT[i2:] -= (Err1.t().contiguous() @ scaled[i1:i2, i2:]).t()
        return prunedT, scales

    @staticmethod
    def _block_mask(W1: torch.Tensor, d2: torch.Tensor, sparsity: float) -> torch.Tensor:
        """Unstructured: the lowest ``sparsity`` share of the block's ``w^2 / [Hinv]_cc^2``, as
        ``W1`` is laid out (``(count, rows)``, the block transposed). Where that share is one set
        (no tie across its edge) it is found by selection (``kthvalue``, faster than a ``topk``
        of half the block, docs/results.md); where it ties, ``topk`` chooses."""
        count, rows = W1.shape
        n_prune = int(round(sparsity * W1.numel()))
        if not n_prune:
            return torch.zeros_like(W1, dtype=torch.bool)
        score = W1.t().pow(2) / d2  # (rows, count)
        low = score <= torch.kthvalue(score.flatten(), n_prune).values
        if int(low.sum()) == n_prune:
            return low.t()
        chosen = torch.topk(score.flatten(), n_prune, largest=False).indices  # row-major ranks
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        prune1.view(-1)[(chosen % count) * rows + chosen // count] = True
        return prune1

    def free(self) -> None:
        self.xxt.free()
        self.factor.clear()

    @classmethod
    def work(cls, width: int, rows: int, options: SparseGPTOptions) -> float:
        """In flops, ``d`` = ``width``, ``B`` = the blocksize: the factorisations (a Cholesky
        ``d^3/3``, its inverse ``2 d^3/3``, the inverse's Cholesky ``d^3/3``), the lazy-block
        updates (``2 B rows`` per column left, ``rows d^2`` in all) and the updates inside each
        block (``rows d B``), at :data:`WORK_EFFICIENCY`, plus the mask."""
        d = float(width)
        flops = 4 / 3 * d**3 + rows * d**2 + rows * d * options.blocksize
        return flops / WORK_EFFICIENCY + super().work(width, rows, options)
