"""Does a generation fit the exported model's context?

A model attends to at most its context of positions (learned position embeddings, a RoPE cache,
the runtime's key/value buffers are sized to it); a prompt plus new tokens beyond that is
refused before any model loads, with the numbers and the flag that helps. The context is what
the export folder records: ``max_position_embeddings`` in ``config.json`` for an optimum export
(GPT-2's ``n_positions``, through transformers' attribute map), ``context_length`` in
``genai_config.json`` for an onnxruntime-genai build (:func:`exporters.onnx.genai.context_length`).
"""

from __future__ import annotations

from pathlib import Path

from compress.core.errors import BadInputError


def config_context(folder: Path) -> int | None:
    """The folder's ``config.json`` ``max_position_embeddings`` (``None``: not recorded)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(folder), "max_position_embeddings", None)


def check_fits(prompt_tokens: int, max_new_tokens: int, context: int | None) -> None:
    """Refuse a prompt of ``prompt_tokens`` plus ``max_new_tokens`` beyond ``context``.

    Raises:
        BadInputError: they do not fit; the numbers and what to change.
    """
    total = prompt_tokens + max_new_tokens
    if context is None or total <= context:
        return
    raise BadInputError(
        f"the prompt is {prompt_tokens:,} tokens and --max-new-tokens asks for "
        f"{max_new_tokens:,} more: {total:,} is beyond the model's context of {context:,} "
        f"tokens; {_remedy(prompt_tokens, max_new_tokens, context)}"
    )


def _remedy(prompt_tokens: int, max_new_tokens: int, context: int) -> str:
    if prompt_tokens < context:
        return f"use --max-new-tokens {context - prompt_tokens} or a shorter prompt"
    if max_new_tokens < context:
        return f"shorten the prompt to at most {context - max_new_tokens:,} tokens"
    return f"shorten the prompt and use --max-new-tokens below {context}"
