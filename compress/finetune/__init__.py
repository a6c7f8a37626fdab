"""Causal-LM fine-tuning of a pruned model folder, with AdamW, SAM-AdamW or ASAM-AdamW.

All parameters train. The sparsity pattern is read from the saved model itself: every exact
zero in a prunable Linear weight of the decoder blocks is pruned and stays zero (gradients are
masked before each step and the weights re-masked after it, see :mod:`compress.algorithms.sam`), so the
measured sparsity after fine-tuning equals the sparsity before.

Per step: ``batch × grad_accum`` token windows of ``seqlen`` tokens (the train split of
``data``, windows reshuffled each epoch), one optimizer step, a cosine learning-rate schedule
after ``warmup`` linear steps. Held-out loss on the test split every ``eval_every`` steps; a
checkpoint (model, optimizer, scheduler, history) every ``save_every`` steps for ``--resume``.
The run writes into a staging folder beside ``output`` (checkpoint included) and publishes it
as ``output`` at the end: model, tokenizer, recipe and the source report with a ``finetune``
section (see :func:`save_output`).
"""

from compress.finetune.config import FinetuneConfig, Optimizer, Precision

# The torch-free config loads eagerly (the CLI builds its command from it); the rest, which
# needs torch, on first use.
_LAZY = {
    "FinetuneRun": "compress.finetune.run",
    "finetune": "compress.finetune.run",
    "lr_lambda": "compress.finetune.training",
    "sparsity_masks": "compress.finetune.training",
    "window_order": "compress.finetune.data",
}

__all__ = ["FinetuneConfig", "Optimizer", "Precision", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
