"""Shared fixtures: offline tiny random models and the embedded tokenizer."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Tests run tiny tensors: threads only add OpenMP start-up cost (and stall on a loaded machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def requires_gpu(func):
    """Skip a test where no CUDA device is visible."""
    return pytest.mark.gpu(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(func)
    )


@pytest.fixture(scope="session")
def embedded_dir():
    """The embedded SmolLM2 model as a cached safetensors folder (converted once)."""
    from compress.models import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    """A real tokenizer (the embedded model's), loaded offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


def tiny_llama_config(vocab_size: int = 49152, layers: int = 2):
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


@pytest.fixture
def tiny_llama():
    """A 2-block random Llama with the embedded tokenizer's vocabulary, in eval mode."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture
def tiny_llama_1k():
    """The tiny random Llama with a 1,000-token vocabulary, for cheap second-order tests."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=1000)).eval()


def family_configs(vocab_size: int = 256) -> dict:
    """One tiny random config per supported model_type (hidden 64, 2 blocks)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    gqa = dict(common, intermediate_size=128, num_key_value_heads=2)
    gemma = dict(gqa, head_dim=16)
    return {
        "llama": tf.LlamaConfig(**gqa),
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
        "gpt2": tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4),
        "gpt_neox": tf.GPTNeoXConfig(**common, intermediate_size=128),
    }


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved 2-block random Llama with the embedded tokenizer (a local model folder)."""
    from transformers import LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
