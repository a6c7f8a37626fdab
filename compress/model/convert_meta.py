"""Meta's original Llama checkpoint format -> a transformers folder.

Meta publishes ``params.json`` (the shape), ``consolidated.NN.pth`` (one file per
tensor-parallel shard) and ``tokenizer.model`` (SentencePiece). Converting means: merge the
shards (column-parallel weights were split along the output dim 0, row-parallel ones and the
token embedding along the input dim 1, norms replicated), rename the tensors, and permute the
q/k projections from Meta's rotary convention (rotating interleaved pairs of channels) to
transformers' (rotating the two halves of each head). The shards are read with
``torch.load(weights_only=True)``: tensors only, never pickled code.

The conversion streams: the shards are memory-mapped, and the output is written as
transformers' sharded safetensors, one output shard at a time, each built tensor by tensor from
freshly mapped inputs and freed (with the mappings and the pages they touched) once written. The
peak is about one output shard built plus the input pages it read, not the model twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
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
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD_BYTES = 2 * 2**30  # the largest output shard by default
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


@dataclass(frozen=True)
class Planned:
    """One transformers tensor to build: where it comes from and what it will be."""

    key: str  # Meta's name
    name: str  # transformers'
    dim: int | None  # the dim the shards were split along; None: replicated
    shape: torch.Size  # merged
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def plan_tensors(shards: list[dict[str, torch.Tensor]]) -> dict[str, Planned]:
    """Meta name -> the merged tensor it becomes (in file order), read off the shards' shapes
    without touching their data."""
    planned = {}
    for key, first in shards[0].items():
        if key.endswith(SKIPPED):
            continue
        name, dim = _rename(key)
        shape = list(first.shape)
        if dim is not None:
            shape[dim] = sum(shard[key].shape[dim] for shard in shards)
        planned[key] = Planned(key, name, dim, torch.Size(shape), first.dtype)
    return planned


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


def llama_config(params: dict, planned: dict[str, Planned]):
    """A LlamaConfig from params.json, with vocabulary and MLP width read off the weights
    (params.json leaves ``vocab_size`` at -1 and gives the MLP width only as a rounding rule)."""
    from transformers import LlamaConfig

    heads = params["n_heads"]
    embed = planned["tok_embeddings.weight"]
    return LlamaConfig(
        vocab_size=embed.shape[0],
        hidden_size=params["dim"],
        intermediate_size=planned["layers.0.feed_forward.w1.weight"].shape[0],
        num_hidden_layers=params["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=params.get("n_kv_heads") or heads,
        rms_norm_eps=params.get("norm_eps", 1e-5),
        rope_theta=params.get("rope_theta", 10000.0),
        max_position_embeddings=params.get("max_seq_len", DEFAULT_CONTEXT),
        tie_word_embeddings="output.weight" not in planned,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype=embed.dtype,
    )


def hf_tensor(shards: list[dict[str, torch.Tensor]], entry: Planned, config) -> torch.Tensor:
    """One transformers tensor: the shards' parts merged, q/k rows permuted to its rotary
    convention, contiguous (a replicated or unsplit tensor stays a view of the mapped file)."""
    parts = [shard[entry.key] for shard in shards]
    tensor = parts[0] if entry.dim is None or len(parts) == 1 else torch.cat(parts, entry.dim)
    suffix = entry.key.partition(".")[2].partition(".")[2]
    if suffix == "attention.wq.weight":
        tensor = permute_rotary(tensor, config.num_attention_heads)
    elif suffix == "attention.wk.weight":
        tensor = permute_rotary(tensor, config.num_key_value_heads)
    return tensor.contiguous()


def shard_groups(entries: list[Planned], max_bytes: int) -> list[list[Planned]]:
    """The tensors in order, cut into output shards of at most ``max_bytes`` each (a tensor
    larger than that alone in its own), as transformers' ``save_pretrained`` cuts them."""
    groups: list[list[Planned]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + entry.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    return groups


def shard_names(count: int) -> list[str]:
    """Transformers' file names: one ``model.safetensors``, or ``model-0000i-of-0000n`` ones."""
    if count == 1:
        return [SINGLE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_weights(folder: Path, staging: Path, groups: list[list[Planned]], config) -> None:
    """Each output shard built from freshly mapped input shards, written, and freed (its
    tensors and the mappings with the pages they touched) before the next one is built."""
    from safetensors.torch import save_file

    weight_map: dict[str, str] = {}
    for group, file in zip(groups, shard_names(len(groups)), strict=True):
        shards = read_shards(folder)
        tensors = {entry.name: hf_tensor(shards, entry, config) for entry in group}
        del shards
        save_file(tensors, str(staging / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, file)
        del tensors
    if len(groups) > 1:
        total = sum(entry.nbytes for group in groups for entry in group)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / INDEX).write_text(json.dumps(index, indent=2))


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


def convert_meta(folder: Path, target: Path, shard_bytes: int = SHARD_BYTES) -> None:
    """Write a transformers folder (config, safetensors in shards of at most ``shard_bytes``,
    tokenizer) for Meta's ``folder``, tensor by tensor: the memory-mapped input plus one output
    shard in memory at most."""
    from transformers import LlamaTokenizerFast

    if not (folder / TOKENIZER).is_file():
        raise BadInputError(f"{folder} has no {TOKENIZER}: the tokenizer cannot be built")
    params = json.loads((folder / PARAMS).read_text())
    planned = plan_tensors(read_shards(folder))
    config = llama_config(params, planned)
    # from the folder, not vocab_file=: the same pieces as SentencePiece itself, BOS first, on
    # transformers 4.57 and 5.x alike
    tokenizer = LlamaTokenizerFast.from_pretrained(str(folder), legacy=False, add_bos_token=True)
    with atomic_folder(target) as tmp:
        config.save_pretrained(tmp)
        write_weights(folder, tmp, shard_groups(list(planned.values()), shard_bytes), config)
        tokenizer.save_pretrained(tmp)


def converted_folder(folder: Path, cache: Path, log: Callable[[str], None]) -> Path:
    """The transformers twin of Meta's ``folder`` under ``cache``, converted on first use."""
    if (cache / "config.json").is_file():
        return cache
    log(f"converting Meta's checkpoint format in {folder} to a transformers folder {cache} (once)")
    convert_meta(folder, cache)
    return cache
