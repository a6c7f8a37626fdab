"""The model families written to GGUF: llama.cpp's architecture for each ``model_type``, the
hyperparameters it reads, and the one weight transform it needs.

llama.cpp runs Llama's rotary embedding on interleaved pairs, transformers on the two halves of
each head, so a Llama (and Mistral, which llama.cpp runs as Llama) GGUF holds the rows of
``q_proj`` and ``k_proj`` permuted within each head (llama.cpp's ``convert_hf_to_gguf.py``;
transformers' GGUF loader undoes it). A row permutation moves whole rows of integers with their
scales, so the blocks stay exact. Qwen2 uses the halves layout in llama.cpp too: no permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.core.errors import BadInputError


@dataclass(frozen=True)
class Family:
    """How one ``model_type`` is written: llama.cpp's architecture name and whether Q/K rows
    are permuted.

    Mistral is written as llama.cpp's converter writes it, as a Llama (the same blocks), and
    transformers loads it back as ``LlamaForCausalLM`` (its reader takes Mistral only from a
    ``general.name`` of "mistral", then finds no such architecture in gguf-py 0.19). Neither
    has Mistral's sliding window: past ``sliding_window`` tokens they attend further back than
    the folder's model.
    """

    arch: str
    permute_qk: bool


FAMILIES = {
    "llama": Family("llama", permute_qk=True),
    "mistral": Family("llama", permute_qk=True),
    "qwen2": Family("qwen2", permute_qk=False),
}


def family_of(config) -> Family:
    """The family of a transformers config; refuses the others in one line."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise BadInputError(
            f"GGUF export writes {', '.join(FAMILIES)} models; this folder is "
            f"{config.model_type!r} (use compress export onnx or compressed for it)"
        )
    rope = rope_parameters(config)
    if rope.get("rope_type", "default") != "default":
        raise BadInputError(
            f"GGUF export writes the default rotary embedding; this model's is "
            f"{rope['rope_type']!r} (not supported yet)"
        )
    return family


def rope_parameters(config) -> dict:
    """``rope_theta`` and ``rope_type``, from either transformers' config layout (4.57 keeps
    ``rope_theta`` and ``rope_scaling``, 5 one ``rope_parameters`` dict)."""
    params = dict(
        getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    )
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    if "rope_theta" not in params:
        params["rope_theta"] = config.rope_theta
    return params


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def add_hparams(writer, config, name: str) -> None:
    """The hyperparameters llama.cpp reads for these families (``{arch}.*`` keys)."""
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_parameters(config)["rope_theta"]))
    writer.add_rope_dimension_count(head_dim(config))
    if head_dim(config) != config.hidden_size // heads:
        writer.add_key_length(head_dim(config))
        writer.add_value_length(head_dim(config))
    writer.add_vocab_size(config.vocab_size)


def permute_rows(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of ``t`` (a Q or K weight, bias or scale table) from transformers' rotary layout to
    llama.cpp's: in each head, the two halves interleaved."""
    rows = t.shape[0]
    return t.reshape(heads, 2, rows // heads // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)


def qk_heads(hf_name: str, config) -> int | None:
    """The head count to permute ``hf_name`` by (None: not a Q/K projection)."""
    if ".q_proj." in hf_name:
        return config.num_attention_heads
    if ".k_proj." in hf_name:
        return config.num_key_value_heads or config.num_attention_heads
    return None
