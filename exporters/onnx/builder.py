"""``python -m exporters.onnx.builder ARGS``: onnxruntime-genai 0.18's model builder, run with
transformers 4.57 (the builder is written against transformers 5).

Three adjustments to what it reads, all before the builder is imported, none changing what the
Hugging Face model computes:

- it imports ``Qwen3_5ForConditionalGeneration`` and ``Qwen3_5MoeForConditionalGeneration``,
  which transformers 4.57 lacks: placeholder classes stand in (only Qwen 3.5 models use them);
- it reads RoPE settings from ``rope_scaling`` and fails when that is ``None`` (plain RoPE, as in
  Llama and SmolLM2 configs): a ``None`` becomes ``{"rope_type": "default"}``, what
  transformers itself means by ``None``;
- it windows the blocks ``layer_types`` marks ``"sliding_attention"`` and no others, but
  transformers 4.57's Mistral and Phi-3 configs have no ``layer_types``: their models window every
  block whenever ``sliding_window`` is set (no ``use_sliding_window`` flag gates it), and the
  builder wrote a window into genai_config.json that no block used, attending to the whole
  context. Those configs get ``layer_types`` saying so. A window as long as the context drops
  nothing, so there the blocks stay global (the builder would size each block's cache to the
  window).
"""

from __future__ import annotations

import runpy
import sys

MISSING = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")
# model_types whose transformers model applies ``sliding_window`` to every block, from a config
# without ``layer_types`` (Mixtral's too, but the builder takes no Mixtral)
WINDOW_EVERY_BLOCK = ("mistral", "mixtral", "phi3")


def window_layer_types(config) -> list[str] | None:
    """The ``layer_types`` the builder needs to window the blocks transformers windows, where the
    config lacks them; ``None`` where it has them or nothing is windowed."""
    window = getattr(config, "sliding_window", None)
    if config.model_type not in WINDOW_EVERY_BLOCK or getattr(config, "layer_types", None):
        return None
    if not window or window >= config.max_position_embeddings:
        return None
    return ["sliding_attention"] * config.num_hidden_layers


def _adapt_transformers() -> None:
    import transformers

    for name in MISSING:
        if not hasattr(transformers, name):
            setattr(transformers, name, type(name, (), {}))
    load = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        loaded = load(cls, *args, **kwargs)  # (config, unused) with return_unused_kwargs
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if getattr(config, "rope_scaling", False) is None:
            config.rope_scaling = {"rope_type": "default"}
        layer_types = window_layer_types(config)
        if layer_types is not None:
            config.layer_types = layer_types
        return loaded

    transformers.AutoConfig.from_pretrained = classmethod(from_pretrained)


if __name__ == "__main__":
    _adapt_transformers()
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
