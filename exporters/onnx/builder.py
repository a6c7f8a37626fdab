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
  window);
- under transformers 5, Gemma 3 keeps its RoPE per layer type (``rope_parameters`` holds a
  ``full_attention`` and a ``sliding_attention`` entry) where the builder reads one flat entry
  for the global blocks and ``rope_local_base_freq`` for the sliding ones (it failed with
  ``KeyError: 'rope_type'``): its Gemma 3 builder is handed a copy of the config in that form
  (the Hugging Face model it loads keeps the original).
"""

from __future__ import annotations

import copy
import importlib
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


def flat_rope(config):
    """A copy of ``config`` with Gemma 3's per-layer-type RoPE (transformers 5) in the flat form
    the builder reads; ``config`` itself where it is flat already."""
    rope = getattr(config, "rope_parameters", None)
    if not (isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict)):
        return config
    flat = copy.copy(config)
    local = rope.get("sliding_attention") or {}
    if "rope_theta" in local:
        flat.rope_local_base_freq = local["rope_theta"]
    flat.rope_parameters = dict(rope["full_attention"])
    return flat


def _adapt_builder() -> None:
    import onnxruntime_genai.models  # noqa: F401  (puts its folder on sys.path, as the builder's own imports expect)

    # the builder imports its classes as the top-level package ``builders``, not through
    # onnxruntime_genai.models: that is the class it constructs
    gemma = importlib.import_module("builders.gemma")
    init = gemma.Gemma3Model.__init__

    def flat_init(self, config, *args, **kwargs):
        init(self, flat_rope(config), *args, **kwargs)

    gemma.Gemma3Model.__init__ = flat_init


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
    _adapt_builder()
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
