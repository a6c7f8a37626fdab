"""``python -m exporters.genai_builder ARGS``: onnxruntime-genai 0.18's model builder, run with
transformers 4.57 (the builder is written against transformers 5).

Two adjustments, both before the builder is imported, neither changing what it computes:

- it imports ``Qwen3_5ForConditionalGeneration`` and ``Qwen3_5MoeForConditionalGeneration``,
  which transformers 4.57 lacks: placeholder classes stand in (only Qwen 3.5 models use them);
- it reads RoPE settings from ``rope_scaling`` and fails when that is ``None`` (plain RoPE, as in
  Llama and SmolLM2 configs): a ``None`` becomes ``{"rope_type": "default"}``, what
  transformers itself means by ``None``.
"""

from __future__ import annotations

import runpy
import sys

MISSING = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")


def _adapt_transformers() -> None:
    import transformers

    for name in MISSING:
        if not hasattr(transformers, name):
            setattr(transformers, name, type(name, (), {}))
    load = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        config = load(cls, *args, **kwargs)
        if getattr(config, "rope_scaling", False) is None:
            config.rope_scaling = {"rope_type": "default"}
        return config

    transformers.AutoConfig.from_pretrained = classmethod(from_pretrained)


if __name__ == "__main__":
    _adapt_transformers()
    sys.argv = ["onnxruntime_genai.models.builder", *sys.argv[1:]]
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__")
