"""A quantized folder written as one GGUF file, tensor by tensor (two passes over the
safetensors files: the tensor table first, then each tensor converted and written, so only one
weight is in memory at a time).

- block Linears in the record: Q4_0 / Q8_0 blocks of the record's integers and scales
  (:mod:`exporters.gguf.blocks`), Q/K rows permuted for llama.cpp's Llama (:mod:`families`);
- 1-D tensors (norms, biases): F32, as llama.cpp requires;
- the rest (token embeddings, an untied LM head, Linears left out of the record): the dtype the
  folder holds them in (F32, F16 or BF16). A tied LM head is not written: llama.cpp, like
  transformers' GGUF loader, ties the output to ``token_embd`` when ``output.weight`` is absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.algorithms.quant.record import QuantRecord, integers, read_record
from compress.core.errors import BadInputError
from exporters.gguf.blocks import BLOCK, pack, quant_type
from exporters.gguf.families import Family, add_hparams, family_of, permute_rows, qk_heads
from exporters.gguf.vocab import add_tokenizer, tokenizer_json

SUPPORTED = "int4 or int8 with --group-size 32 (GGUF Q4_0 / Q8_0)"
FILE_TYPES = {4: "MOSTLY_Q4_0", 8: "MOSTLY_Q8_0"}


@dataclass(frozen=True)
class Source:
    """What a folder is written from: its config, family, record and tensors' files."""

    folder: Path
    config: object
    family: Family
    record: QuantRecord
    files: dict[str, Path]  # tensor name -> safetensors file

    @property
    def type_name(self) -> str:
        return quant_type(self.record.grid.bits).name


def check_source(folder: Path) -> Source:
    """Everything refusable before any work: the family, the record and its grid, the
    tokenizer, the weights' files."""
    from transformers import AutoConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} has no config.json: point to a saved model folder")
    config = AutoConfig.from_pretrained(folder)
    family = family_of(config)
    record = read_record(folder)
    if record is None:
        raise BadInputError(
            f"{folder} holds no quantization record: GGUF export writes the integers of a "
            "quantized folder; run `compress quantize` or `compress prune --quantize` first"
        )
    grid = record.grid
    if grid.bits not in FILE_TYPES or grid.group_size != BLOCK:
        per = f"group size {grid.group_size}" if grid.group_size else "one scale per row"
        raise BadInputError(
            f"{folder} is quantized to int{grid.bits} with {per}; GGUF export writes {SUPPORTED} "
            "without re-rounding: quantize again with --group-size 32"
        )
    tokenizer_json(folder)
    return Source(folder, config, family, record, tensor_files(folder))


def tensor_files(folder: Path) -> dict[str, Path]:
    from safetensors import safe_open

    files = {}
    for path in sorted(folder.glob("*.safetensors")):
        if path.name == "quantization.safetensors":
            continue
        with safe_open(str(path), framework="pt") as f:
            files.update(dict.fromkeys(f.keys(), path))
    if not files:
        raise BadInputError(f"{folder} has no safetensors weights; save the model with them")
    return files


def gguf_names(source: Source) -> dict[str, str]:
    """Each tensor's GGUF name by its name in the folder (a tied head left out); refuses a
    tensor llama.cpp's name map does not know."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next(a for a, n in MODEL_ARCH_NAMES.items() if n == source.family.arch)
    names = get_tensor_name_map(arch, source.config.num_hidden_layers)
    tied = source.config.tie_word_embeddings
    mapped = {}
    for hf_name in source.files:
        if tied and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise BadInputError(
                f"{hf_name} has no place in a {source.family.arch} GGUF; nothing was written"
            )
        mapped[hf_name] = name
    return mapped


def load(source: Source, hf_name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(source.files[hf_name]), framework="pt") as f:
        return f.get_tensor(hf_name)


def converted(source: Source, hf_name: str) -> tuple[np.ndarray, object]:
    """The tensor as written: (array, GGML type)."""
    from gguf import GGMLQuantizationType as T

    t = load(source, hf_name)
    heads = qk_heads(hf_name, source.config) if source.family.permute_qk else None
    scales = source.record.scales.get(hf_name)
    if scales is not None:
        grid = source.record.grid
        q = integers(t, scales, grid, hf_name)
        if heads:
            q, scales = permute_rows(q, heads), permute_rows(scales, heads)
        return pack(q, scales, grid.bits), quant_type(grid.bits)
    if heads:
        t = permute_rows(t, heads)
    if t.dim() == 1 or t.dtype == torch.float32:
        return t.float().numpy(), T.F32
    if t.dtype == torch.float16:
        return t.numpy(), T.F16
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), T.BF16
    raise BadInputError(f"{hf_name} is {t.dtype}; GGUF export writes float32, float16, bfloat16")


def tensor_info(source: Source, hf_name: str) -> tuple[tuple[int, ...], np.dtype, int, object]:
    """(shape as written, numpy dtype, bytes, GGML type) without converting the tensor."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T
    from safetensors import safe_open

    with safe_open(str(source.files[hf_name]), framework="pt") as f:
        piece = f.get_slice(hf_name)
        shape, dtype = tuple(piece.get_shape()), piece.get_dtype()
    if hf_name in source.record.scales:
        kind = quant_type(source.record.grid.bits)
        block, size = GGML_QUANT_SIZES[kind]
        byte_shape = (shape[0], shape[1] // block * size)
        return byte_shape, np.dtype(np.uint8), byte_shape[0] * byte_shape[1], kind
    kind, np_dtype = {"F16": (T.F16, np.float16), "BF16": (T.BF16, np.uint16)}.get(
        dtype, (T.F32, np.float32)
    )
    if len(shape) == 1:
        kind, np_dtype = T.F32, np.float32
    return shape, np.dtype(np_dtype), int(np.prod(shape)) * np.dtype(np_dtype).itemsize, kind


def write_gguf(source: Source, path: Path) -> dict:
    """Write ``source`` to ``path``; return what was written (tensor counts by type, the
    tokenizer's pre-tokenizer)."""
    from gguf import GGUFWriter, LlamaFileType

    names = gguf_names(source)
    writer = GGUFWriter(path, source.family.arch)
    add_hparams(writer, source.config, source.folder.name)
    writer.add_file_type(LlamaFileType[FILE_TYPES[source.record.grid.bits]])
    writer.add_quantization_version(2)
    pre = add_tokenizer(writer, source.folder, source.config.vocab_size)
    counts: dict[str, int] = {}
    for hf_name, name in names.items():
        shape, dtype, nbytes, kind = tensor_info(source, hf_name)
        writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=kind)
        counts[kind.name] = counts.get(kind.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for array in _arrays(source, names):
        writer.write_tensor_data(array)
    writer.close()
    return {"tensors": counts, "pre_tokenizer": pre}


def _arrays(source: Source, names: dict[str, str]) -> Iterator[np.ndarray]:
    for hf_name in names:
        array, _ = converted(source, hf_name)
        yield np.ascontiguousarray(array)
