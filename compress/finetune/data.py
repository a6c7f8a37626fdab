"""The token windows a fine-tuning run trains and is scored on."""

from __future__ import annotations

import math

import torch

from compress.core.errors import BadInputError
from compress.finetune.config import FinetuneConfig


def training_windows(tokenizer, config: FinetuneConfig) -> tuple[torch.Tensor, dict]:
    """All the train windows one run needs (or every window the text holds, reused by epoch)."""
    from compress.data.calibration import load_texts, sample_windows, tokenize_stream

    texts = load_texts(config.data, "train")
    slots = len(tokenize_stream(tokenizer, texts)) // config.seqlen
    per_step = config.batch * config.grad_accum
    if slots < config.batch:
        raise BadInputError(
            f"--data {config.data} holds {slots} train windows of {config.seqlen} tokens, "
            f"fewer than --batch {config.batch}; lower --seqlen/--batch or add text"
        )
    windows = sample_windows(
        tokenizer,
        texts,
        min(slots, config.steps * per_step),
        config.seqlen,
        config.seed,
        config.data,
        "train",
    )
    return windows.ids, windows.describe()


def window_order(available: int, needed: int, seed: int) -> torch.Tensor:
    """Indices of ``needed`` windows: a fresh seeded permutation of all ``available`` per epoch."""
    generator = torch.Generator().manual_seed(seed)
    epochs = math.ceil(needed / available)
    return torch.cat([torch.randperm(available, generator=generator) for _ in range(epochs)])


def heldout_windows(tokenizer, config: FinetuneConfig) -> tuple[torch.Tensor | None, dict | None]:
    if config.eval_windows == 0:
        return None, None
    from compress.data.calibration import load_windows

    windows = load_windows(
        tokenizer, config.data, config.eval_windows, config.seqlen, config.seed, "test"
    )
    return windows.ids, windows.describe()
