"""Meta's original Llama checkpoint format -> a transformers folder.

Meta publishes ``params.json`` (the shape), ``consolidated.NN.pth`` (one file per
tensor-parallel shard) and ``tokenizer.model`` (SentencePiece). Converting means: merge the
shards (column-parallel weights were split along the output dim 0, row-parallel ones and the
token embedding along the input dim 1, norms replicated), rename the tensors, and permute the
q/k projections from Meta's rotary convention (rotating interleaved pairs of channels) to
transformers' (rotating the two halves of each head). The shards are read with
``torch.load(weights_only=True)``: tensors only, never pickled code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from compress.core.io import atomic_folder

PARAMS = "params.json"
TOKENIZER = "tokenizer.model"
SHARD_GLOB = "consolidated.*.pth"

# Meta name suffix -> (transformers name, dim the shards were split along; None: replicated)
LAYER_NAMES = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
TOP_NAMES = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", 1),
    "norm.weight": ("model.norm.weight", None),
    "output.weight": ("lm_head.weight", 0),
}
SKIPPED = ("rope.freqs",)  # recomputed by transformers from rope_theta
DEFAULT_CONTEXT = 4096  # Llama 2's; params.json does not say


def is_meta_format(names: list[str]) -> bool:
    """Whether a folder's (or repository's) top-level file names are Meta's checkpoint format."""
    return PARAMS in names and any(Path(n).match(SHARD_GLOB) for n in names)


def meta_files(names: list[str]) -> list[str]:
    """The files a conversion reads, from a listing."""
    return [n for n in names if n in (PARAMS, TOKENIZER) or Path(n).match(SHARD_GLOB)]


def permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Meta's q/k rows (channel pairs rotate together) in transformers' order (halves rotate)."""
    rows, cols = weight.shape
    return weight.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def merge_shards(shards: list[dict[str, torch.Tensor]]) -> dict[str, tuple[str, torch.Tensor]]:
    """One tensor per transformers name, from the tensor-parallel shards (in file order)."""
    merged = {}
    for key in shards[0]:
        if key.endswith(SKIPPED):
            continue
        new_name, dim = _rename(key)
        parts = [shard[key] for shard in shards]
        merged[key] = (new_name, parts[0] if dim is None else torch.cat(parts, dim=dim))
    return merged


def _rename(key: str) -> tuple[str, int | None]:
    if key in TOP_NAMES:
        return TOP_NAMES[key]
    prefix, _, rest = key.partition(".")
    index, _, suffix = rest.partition(".")
    if prefix == "layers" and index.isdigit() and suffix in LAYER_NAMES:
        name, dim = LAYER_NAMES[suffix]
        return f"model.layers.{index}.{name}", dim
    raise BadInputError(
        f"Meta checkpoint tensor {key!r} is not a Llama tensor this converter knows"
    )


def llama_config(params: dict, merged: dict[str, tuple[str, torch.Tensor]]):
    """A LlamaConfig from params.json, with vocabulary and MLP width read off the weights
    (params.json leaves ``vocab_size`` at -1 and gives the MLP width only as a rounding rule)."""
    from transformers import LlamaConfig

    heads = params["n_heads"]
    embed = merged["tok_embeddings.weight"][1]
    return LlamaConfig(
        vocab_size=embed.shape[0],
        hidden_size=params["dim"],
        intermediate_size=merged["layers.0.feed_forward.w1.weight"][1].shape[0],
        num_hidden_layers=params["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=params.get("n_kv_heads") or heads,
        rms_norm_eps=params.get("norm_eps", 1e-5),
        rope_theta=params.get("rope_theta", 10000.0),
        max_position_embeddings=params.get("max_seq_len", DEFAULT_CONTEXT),
        tie_word_embeddings="output.weight" not in merged,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype=embed.dtype,
    )


def hf_state_dict(merged: dict[str, tuple[str, torch.Tensor]], config) -> dict[str, torch.Tensor]:
    """Transformers names and q/k rows permuted to its rotary convention."""
    heads = {"attention.wq.weight": config.num_attention_heads}
    heads["attention.wk.weight"] = config.num_key_value_heads
    state = {}
    for key, (name, tensor) in merged.items():
        suffix = key.partition(".")[2].partition(".")[2]
        if suffix in heads:
            tensor = permute_rotary(tensor, heads[suffix])
        state[name] = tensor.contiguous()
    return state


def read_shards(folder: Path) -> list[dict[str, torch.Tensor]]:
    """Every ``consolidated.NN.pth`` in shard order, memory-mapped, tensors only."""
    files = sorted(folder.glob(SHARD_GLOB))
    if not files:
        raise BadInputError(f"{folder} has {PARAMS} but no {SHARD_GLOB} shards")
    shards = []
    for file in files:
        try:
            shards.append(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
        except Exception as exc:  # pickle/zip errors of every kind: the file is not loadable
            raise BadInputError(
                f"{file} does not load as a tensors-only checkpoint ({type(exc).__name__}); "
                "download it again"
            ) from exc
    return shards


def convert_meta(folder: Path, target: Path) -> None:
    """Write a transformers folder (config, safetensors, tokenizer) for Meta's ``folder``."""
    from safetensors.torch import save_file
    from transformers import LlamaTokenizerFast

    if not (folder / TOKENIZER).is_file():
        raise BadInputError(f"{folder} has no {TOKENIZER}: the tokenizer cannot be built")
    params = json.loads((folder / PARAMS).read_text())
    merged = merge_shards(read_shards(folder))
    config = llama_config(params, merged)
    # from the folder, not vocab_file=: the same pieces as SentencePiece itself, BOS first, on
    # transformers 4.57 and 5.x alike
    tokenizer = LlamaTokenizerFast.from_pretrained(str(folder), legacy=False, add_bos_token=True)
    with atomic_folder(target) as tmp:
        config.save_pretrained(tmp)
        state = hf_state_dict(merged, config)
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)


def converted_folder(folder: Path, cache: Path, log: Callable[[str], None]) -> Path:
    """The transformers twin of Meta's ``folder`` under ``cache``, converted on first use."""
    if (cache / "config.json").is_file():
        return cache
    log(f"converting Meta's checkpoint format in {folder} to a transformers folder {cache} (once)")
    convert_meta(folder, cache)
    return cache
