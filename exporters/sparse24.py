"""2:4-pruned Linears on torch's semi-structured sparse kernels, timed against dense on one GPU.

``torch.sparse.to_sparse_semi_structured`` packs a weight with two zeros in every four
consecutive input weights into values + metadata that NVIDIA's sparse tensor cores (Ampere and
newer; CUTLASS or cuSPARSELt) multiply at up to twice the dense rate. Only Linears whose weight
really is 2:4 (every group of four along the input dimension has at least two zeros) are
swapped, in bf16 or fp16. :func:`benchmark` measures prompt (prefill) latency and per-token
decode latency for the dense model and the same model swapped, on the same GPU and prompt,
and compares their logits within bf16 tolerance. On a CPU it refuses with one line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.core.errors import BadInputError

# bf16 keeps 8 mantissa bits: sparse and dense kernels sum in different orders, so logits of
# magnitude ~30 may differ by a few bf16 steps; the check is relative to the largest logit
RTOL = 2e-2
MIN_SHAPE = 64  # the sparse kernels want both weight dimensions a multiple of 64 (bf16/fp16)


def require_gpu() -> None:
    """Refuse, in one line, where there is no CUDA GPU for the sparse kernels."""
    if not torch.cuda.is_available():
        raise BadInputError(
            "bench-sparse needs a CUDA GPU (torch's 2:4 semi-structured sparse kernels); "
            "this machine has none"
        )


def is_24(weight: torch.Tensor) -> bool:
    """Whether every group of four consecutive input weights holds at least two zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    zeros = (weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1)
    return bool((zeros >= 2).all())


def swappable(module: torch.nn.Module) -> bool:
    """A Linear the sparse kernels can take: a 2:4 weight, both dimensions a multiple of 64."""
    if not isinstance(module, torch.nn.Linear):
        return False
    rows, cols = module.weight.shape
    return rows % MIN_SHAPE == 0 and cols % MIN_SHAPE == 0 and is_24(module.weight)


def to_semi_structured(model: torch.nn.Module) -> list[str]:
    """Replace every swappable Linear's weight by its semi-structured sparse form, in place;
    return the names swapped."""
    from torch.sparse import to_sparse_semi_structured

    names = []
    for name, module in model.named_modules():
        if swappable(module):
            sparse = to_sparse_semi_structured(module.weight.detach())
            module.weight = torch.nn.Parameter(sparse, requires_grad=False)
            names.append(name)
    return names


def _synchronised(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


@torch.no_grad()
def _timings(model, ids: torch.Tensor, new_tokens: int, repeats: int) -> dict:
    """Prefill ms and per-token decode ms (greedy, the model's own cache), median of repeats.

    Per token: generating ``new_tokens`` minus generating one, over the ``new_tokens - 1``
    decode steps between them, so that the prefill and ``generate``'s own set-up (milliseconds,
    as long as a small model's forward pass on a GPU) cancel out."""
    from exporters.onnx.timing import generation, median_seconds

    mask = torch.ones_like(ids)
    prefill = median_seconds(
        _synchronised(lambda: model(input_ids=ids, attention_mask=mask)), repeats
    )
    first = median_seconds(_synchronised(generation(model, ids, 1, 0)), repeats)
    total = median_seconds(_synchronised(generation(model, ids, new_tokens, 0)), repeats)
    per_token = (total - first) / max(new_tokens - 1, 1)
    return {
        "prefill_ms": 1000 * prefill,
        "first_token_ms": 1000 * first,
        "per_token_ms": 1000 * per_token,
        "tokens_per_second": 1 / per_token if per_token > 0 else None,  # None: lost in noise
    }


@torch.no_grad()
def benchmark(
    folder: Path,
    prompt_tokens: int = 512,
    new_tokens: int = 32,
    repeats: int = 5,
    dtype: str = "bfloat16",
) -> dict:
    """Dense vs semi-structured sparse on this GPU for the model folder ``folder``.

    Raises:
        BadInputError: no CUDA GPU, or no Linear of the model is 2:4 sparse.
    """
    require_gpu()
    from compress.model.loading import load_model

    loaded = load_model(str(folder), device="cuda", dtype=dtype)
    model = loaded.model.eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, prompt_tokens), generator=generator).cuda()
    dense_logits = model(input_ids=ids).logits.float()
    dense = _timings(model, ids, new_tokens, repeats)
    swapped = to_semi_structured(model)
    if not swapped:
        raise BadInputError(f"{folder} has no 2:4-sparse Linear: prune it with --pattern 2:4")
    sparse_logits = model(input_ids=ids).logits.float()
    sparse = _timings(model, ids, new_tokens, repeats)
    worst = (sparse_logits - dense_logits).abs().max().item()
    scale = dense_logits.abs().max().item()
    return {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "dtype": dtype,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "repeats": repeats,
        "linears_swapped": len(swapped),
        "dense": dense,
        "sparse_2_4": sparse,
        "speedup": {
            "prefill": dense["prefill_ms"] / sparse["prefill_ms"],
            "per_token": dense["per_token_ms"] / sparse["per_token_ms"],
        },
        "logits": {
            "max_abs_diff": worst,
            "max_abs_logit": scale,
            "rtol": RTOL,
            "within_tolerance": worst <= RTOL * scale,
        },
    }
