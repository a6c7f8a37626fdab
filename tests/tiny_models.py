"""Tiny random models for the tests: the one place their shapes are defined.

Imported as ``tests.tiny_models`` (the repository root is on the path: pytest's ``pythonpath``
setting, and ``PYTHONPATH`` for the torchrun worker in tests/compress/test_distributed.py, which
runs as a script and so cannot reach the conftest fixtures). Configs are built on call, so every
caller gets its own, and transformers is imported only when a model is wanted.
"""

from __future__ import annotations

import torch

EMBEDDED_VOCAB = 49152  # the embedded SmolLM2 tokenizer's
# a device map of the 2-block tiny Llama with block 1 offloaded to disk (its turn onloads it)
DISK_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def tiny_llama_config(vocab_size: int = EMBEDDED_VOCAB, layers: int = 2):
    """Llama with GQA and RoPE: hidden 64, 4 heads over 2 KV heads, context 256, tied head."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )


def tiny_gpt2_config(vocab_size: int = EMBEDDED_VOCAB):
    """GPT-2 (``Conv1D`` layers, learned positions) of the same size as the tiny Llama."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=256, n_inner=128
    )


def family_configs(vocab_size: int = 256) -> dict:
    """One tiny random config per supported model_type (hidden 64, 2 blocks)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    gqa = dict(common, intermediate_size=128, num_key_value_heads=2)
    gemma = dict(gqa, head_dim=16)
    return {
        "llama": tiny_llama_config(vocab_size),
        "mistral": tf.MistralConfig(**gqa),
        "mixtral": tf.MixtralConfig(**gqa, num_local_experts=2, num_experts_per_tok=1),
        "qwen2": tf.Qwen2Config(**gqa),
        "qwen3": tf.Qwen3Config(**gqa, head_dim=16),
        "gemma": tf.GemmaConfig(**gemma),
        "gemma2": tf.Gemma2Config(**gemma, sliding_window=8),
        "gemma3_text": tf.Gemma3TextConfig(**gemma, sliding_window=8),
        "phi": tf.PhiConfig(**common, intermediate_size=128),
        "phi3": tf.Phi3Config(**common, intermediate_size=128, pad_token_id=0),
        "opt": tf.OPTConfig(**common, ffn_dim=128, word_embed_proj_dim=64),
        "gpt2": tiny_gpt2_config(vocab_size),
        "gpt_neox": tf.GPTNeoXConfig(**common, intermediate_size=128),
    }


def sliding_window_configs(vocab_size: int = 256, window: int = 32) -> dict:
    """The supported families that onnxruntime-genai's model builder takes with a sliding window,
    tiny and with a ``window``-token local window: Gemma-2 alternates local and global blocks,
    Gemma-3 makes both local, Qwen-2/3 keep the first block global (``max_window_layers``),
    Mistral and Phi-3 window every block (their configs have no ``layer_types``; Phi-3 keeps
    ``original_max_position_embeddings`` equal to ``max_position_embeddings``, the builder's
    plain-RoPE Phi-3)."""
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=window,
    )
    qwen = dict(common, use_sliding_window=True, max_window_layers=1)
    return {
        "gemma2": tf.Gemma2Config(**common),
        "gemma3_text": tf.Gemma3TextConfig(**common),
        "qwen2": tf.Qwen2Config(**qwen),
        "qwen3": tf.Qwen3Config(**qwen),
        "mistral": tf.MistralConfig(**common),
        "phi3": tf.Phi3Config(**common, original_max_position_embeddings=256, pad_token_id=0),
    }


def random_model(config, seed: int = 0) -> torch.nn.Module:
    """A causal LM with random weights drawn from ``seed``, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def random_llama(vocab_size: int = EMBEDDED_VOCAB, layers: int = 2, seed: int = 0):
    """The tiny Llama with random weights drawn from ``seed``, in eval mode."""
    return random_model(tiny_llama_config(vocab_size, layers), seed)


def expert_matrices(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every expert's weight matrix by name, whichever way the library stores them: a Linear
    per expert projection (transformers 4.57's Mixtral) or fused ``(experts, out, in)``
    tensors (transformers 5's), sliced per expert and projection."""
    from compress.model.moe import is_fused_experts

    found: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if is_fused_experts(module):
            inner = module.down_proj.shape[2]
            for e in range(len(module.down_proj)):
                found[f"{name}.{e}.gate_proj"] = module.gate_up_proj[e, :inner]
                found[f"{name}.{e}.up_proj"] = module.gate_up_proj[e, inner:]
                found[f"{name}.{e}.down_proj"] = module.down_proj[e]
        elif ".experts." in name and isinstance(module, torch.nn.Linear):
            found[name] = module.weight
    return found
