"""Meta's original checkpoint format (params.json, consolidated.NN.pth, tokenizer.model) written
from a transformers Llama folder tensor by tensor, and a streaming comparison of two folders'
weights: the benchmarks' way to a Meta checkpoint of any size without the model in memory.

The inverse of ``compress.model.convert_meta``: q/k rows back to Meta's rotary order, tensors
renamed and split as tensor parallelism splits them. Each ``.pth`` is first written by
``torch.save`` with its storages' space reserved but empty (``torch.serialization.skip_data``,
fake tensors of the final shapes); then each tensor is read from the safetensors, converted and
written at its storage's offset in the file. The zip records' checksums stay those of the empty
space, which ``torch.load`` does not check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from compress.model.cast_load import checkpoint_files
from compress.model.convert_meta import LAYER_NAMES, PARAMS, TOKENIZER, TOP_NAMES

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "pruning removes weights that matter least",
    "calibration text feeds the statistics of every layer",
] * 20


def sentencepiece_model(texts: list[str] = TEXT, vocab_size: int = 64) -> bytes:
    """A small BPE SentencePiece model with Meta's special ids (unk 0, bos 1, eos 2), trained
    on ``texts``."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return out.getvalue()


def unpermute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Transformers' q/k rows (halves of a head rotate) in Meta's order (pairs rotate)."""
    rows, cols = weight.shape
    return weight.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def tensor_files(folder: Path) -> dict[str, Path]:
    """Each tensor name of a safetensors folder -> the file holding it."""
    from safetensors import safe_open

    where = {}
    for file in checkpoint_files(folder):
        with safe_open(str(file), "pt") as handle:
            where |= dict.fromkeys(handle.keys(), file)
    return where


def read_tensor(file: Path, name: str) -> torch.Tensor:
    """One tensor, its file's mapping closed again (its pages leave the RSS)."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as handle:
        return handle.get_tensor(name)


def meta_layout(config: dict, names: list[str]) -> dict[str, tuple[str, int | None, int]]:
    """Transformers name -> (Meta name, split dim, heads to un-permute by; 0: none)."""
    by_name = {name: (key, dim, 0) for key, (name, dim) in TOP_NAMES.items()}
    heads = {"attention.wq.weight": config["num_attention_heads"]}
    heads["attention.wk.weight"] = config.get("num_key_value_heads") or heads["attention.wq.weight"]
    for index in range(config["num_hidden_layers"]):
        for suffix, (name, dim) in LAYER_NAMES.items():
            by_name[f"model.layers.{index}.{name}"] = (
                f"layers.{index}.{suffix}",
                dim,
                heads.get(suffix, 0),
            )
    return {name: by_name[name] for name in names if name in by_name}


def params_json(config: dict) -> dict:
    return {
        "dim": config["hidden_size"],
        "n_layers": config["num_hidden_layers"],
        "n_heads": config["num_attention_heads"],
        "n_kv_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
        "multiple_of": 256,
        "norm_eps": config.get("rms_norm_eps", 1e-5),
        "rope_theta": config.get("rope_theta", 10000.0),
        "vocab_size": -1,
    }


def rope_freqs(config: dict) -> torch.Tensor:
    """Meta's files carry the rotary frequencies; conversions drop them."""
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    theta = config.get("rope_theta", 10000.0)
    return 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)


def reserve_shards(
    target: Path,
    shapes: dict[str, tuple[torch.Size, torch.dtype]],
    dims: dict[str, int | None],
    shards: int,
) -> list[dict[str, int]]:
    """``consolidated.NN.pth`` with every storage's space reserved; per shard, name -> offset."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    offsets = []
    for rank in range(shards):
        path = target / f"consolidated.{rank:02d}.pth"
        with FakeTensorMode():
            fake = {}
            for key, (shape, dtype) in shapes.items():
                whole = torch.empty(shape, dtype=dtype)
                part = whole if dims[key] is None else whole.chunk(shards, dims[key])[rank]
                fake[key] = torch.empty(part.shape, dtype=dtype)
            with torch.serialization.skip_data(materialize_fake_tensors=True):
                torch.save(fake, path)
            loaded = torch.load(path, weights_only=True, mmap=True)
            offsets.append({k: t.untyped_storage()._checkpoint_offset for k, t in loaded.items()})
    return offsets


def write_meta_checkpoint(
    source: Path, target: Path, tokenizer_model: bytes, shards: int = 1
) -> dict:
    """Meta's format of the Llama folder ``source`` in ``target``, in ``shards`` tensor-parallel
    files; at most one tensor of it in memory. Returns the shard files' total bytes."""
    config = json.loads((source / "config.json").read_text())
    files = tensor_files(source)
    layout = meta_layout(config, list(files))
    target.mkdir(parents=True, exist_ok=True)
    (target / PARAMS).write_text(json.dumps(params_json(config)))
    (target / TOKENIZER).write_bytes(tokenizer_model)
    shapes, dims = {}, {}
    for name, (key, dim, _) in layout.items():
        shapes[key] = _shape_and_dtype(files[name], name)
        dims[key] = dim
    freqs = rope_freqs(config)
    shapes["rope.freqs"], dims["rope.freqs"] = (freqs.shape, freqs.dtype), None
    offsets = reserve_shards(target, shapes, dims, shards)
    paths = [target / f"consolidated.{rank:02d}.pth" for rank in range(shards)]
    handles = [path.open("r+b") for path in paths]
    try:
        for name, (key, dim, heads) in layout.items():
            tensor = read_tensor(files[name], name)
            if heads:
                tensor = unpermute_rotary(tensor, heads)
            _write_parts(handles, [off[key] for off in offsets], tensor, dim)
            del tensor
        _write_parts(handles, [off["rope.freqs"] for off in offsets], freqs, None)
    finally:
        for handle in handles:
            handle.close()
    return {"shard_bytes": sum(path.stat().st_size for path in paths)}


def _shape_and_dtype(file: Path, name: str) -> tuple[torch.Size, torch.dtype]:
    from safetensors import safe_open

    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    with safe_open(str(file), "pt") as handle:
        info = handle.get_slice(name)
        return torch.Size(info.get_shape()), dtypes[info.get_dtype()]


def _write_parts(handles: list, offsets: list[int], tensor: torch.Tensor, dim: int | None) -> None:
    parts = [tensor] * len(handles) if dim is None else tensor.chunk(len(handles), dim)
    for handle, offset, part in zip(handles, offsets, parts, strict=True):
        handle.seek(offset)
        handle.write(part.contiguous().view(-1).view(torch.uint8).numpy())


def same_weights(first: Path, second: Path) -> dict:
    """Whether two safetensors folders hold the same tensor names and every tensor is equal
    (``torch.equal``), one tensor of each in memory at a time."""
    files, others = tensor_files(first), tensor_files(second)
    unequal = [
        name
        for name in files
        if name in others
        and not torch.equal(read_tensor(files[name], name), read_tensor(others[name], name))
    ]
    names_match = set(files) == set(others)
    return {
        "tensors": len(files),
        "names_match": names_match,
        "unequal": unequal,
        "equal": names_match and not unequal,
    }
