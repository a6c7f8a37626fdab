"""A tiny Llama in Meta's original checkpoint format, written from a transformers model by the
inverse of the conversion (q/k rows un-permuted, shards split as tensor parallelism splits them),
with a small SentencePiece ``tokenizer.model`` trained here."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.meta_checkpoint import sentencepiece_model as benchmarks_sentencepiece_model
from compress.model.convert_meta import LAYER_NAMES, TOP_NAMES

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "pruning removes weights that matter least",
    "a small model answers in a few tokens",
    "calibration text feeds the statistics of every layer",
] * 20


def sentencepiece_model() -> bytes:
    """A BPE SentencePiece model with Meta's special ids (unk 0, bos 1, eos 2), on :data:`TEXT`."""
    return benchmarks_sentencepiece_model(TEXT, vocab_size=96)


def vocab_size(model: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model).get_piece_size()


def tiny_meta_llama(vocab: int, seed: int = 0) -> torch.nn.Module:
    """An untied tiny Llama (Meta's checkpoints keep a separate output matrix), GQA 4 over 2."""
    from transformers import LlamaConfig

    from tests.tiny_models import random_model

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    return random_model(config, seed)


def unpermute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    rows, cols = weight.shape
    return weight.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def meta_state(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, int | None]]:
    """Meta's names -> (tensor, split dim)."""
    hf = model.state_dict()
    config = model.config
    by_hf = {name: (key, dim) for key, (name, dim) in TOP_NAMES.items()}
    for index in range(config.num_hidden_layers):
        for suffix, (name, dim) in LAYER_NAMES.items():
            by_hf[f"model.layers.{index}.{name}"] = (f"layers.{index}.{suffix}", dim)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    state = {}
    for name, tensor in hf.items():
        key, dim = by_hf[name]
        projection = name.split(".")[-2]
        if projection in heads:
            tensor = unpermute_rotary(tensor, heads[projection])
        state[key] = (tensor.clone(), dim)
    return state


def write_meta_checkpoint(
    model: torch.nn.Module, tokenizer_model: bytes, folder: Path, shards: int = 1
) -> Path:
    """params.json + consolidated.NN.pth (``shards`` of them) + tokenizer.model in ``folder``."""
    config = model.config
    folder.mkdir(parents=True, exist_ok=True)
    params = {
        "dim": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads,
        "multiple_of": 32,
        "norm_eps": config.rms_norm_eps,
        "vocab_size": -1,
    }
    (folder / "params.json").write_text(json.dumps(params))
    state = meta_state(model)
    state["rope.freqs"] = (torch.ones(8), None)  # Meta's files carry it; conversions drop it
    for rank in range(shards):
        shard = {
            key: tensor if dim is None else tensor.chunk(shards, dim=dim)[rank].clone()
            for key, (tensor, dim) in state.items()
        }
        torch.save(shard, folder / f"consolidated.{rank:02d}.pth")
    (folder / "tokenizer.model").write_bytes(tokenizer_model)
    return folder
