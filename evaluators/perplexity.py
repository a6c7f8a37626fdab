"""Perplexity with the protocol of the SparseGPT/Wanda tables (reference/pruning.md).

The evaluation text is joined as its source's protocol says (:func:`compress.data.calibration.eval_text`:
WikiText-2 and C4 exactly as the SparseGPT/Wanda code, packaged and local texts with blank lines)
and tokenized once, cut into non-overlapping windows of ``seqlen`` tokens, and the mean token
negative log-likelihood over all windows is exponentiated. ``max_windows`` keeps CPU runs short;
the result records how many windows were used and the protocol.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from compress.core.errors import BadInputError
from compress.data.calibration import EvalText, tokenize_stream


@torch.no_grad()
def perplexity_of_ids(
    model: nn.Module,
    stream: torch.Tensor,
    seqlen: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> dict:
    """Perplexity of a 1-D token stream in non-overlapping windows of ``seqlen``."""
    windows = len(stream) // seqlen
    if windows == 0:
        raise BadInputError(
            f"evaluation text has {len(stream)} tokens, fewer than --seqlen {seqlen}"
        )
    if max_windows is not None:
        windows = min(windows, max_windows)
    ids = stream[: windows * seqlen].reshape(windows, seqlen)
    device = model.get_input_embeddings().weight.device
    nll_sum, count = 0.0, 0
    start = time.perf_counter()
    for batch in tqdm(ids.split(batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        nll_sum += float(nll)
        count += batch[:, 1:].numel()
    mean_nll = nll_sum / count
    return {
        "perplexity": math.exp(mean_nll),
        "nll": mean_nll,
        "seqlen": seqlen,
        "windows": windows,
        "tokens": windows * seqlen,
        "seconds": round(time.perf_counter() - start, 2),
    }


def perplexity(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    seqlen: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> dict:
    """Perplexity of ``model`` on ``texts`` (see the module docstring for the protocol)."""
    stream = tokenize_stream(tokenizer, texts)
    return perplexity_of_ids(model, stream, seqlen, max_windows, batch_size, progress)


def perplexity_of_text(
    model: nn.Module,
    tokenizer,
    text: EvalText,
    seqlen: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = False,
) -> dict:
    """Perplexity of ``model`` on ``text`` under its protocol (which may cap the windows, as C4's
    256 do); the result names dataset, split and protocol."""
    caps = [n for n in (max_windows, text.protocol.max_windows) if n is not None]
    stream = text.tokenize(tokenizer)
    result = perplexity_of_ids(model, stream, seqlen, min(caps, default=None), batch_size, progress)
    return {**text.describe(), **result}
