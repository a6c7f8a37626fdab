"""Checkpoints in the compressed-tensors format (the one llm-compressor writes and transformers
and vLLM read). A quantized folder (one with a quantization record) is written as
``pack-quantized`` W4A16 / W8A16 by :mod:`exporters.compressed_quant` (compressed-tensors 0.15 or
later); a pruned one in the legacy sparse formats written here: ``sparse-24-bitmask`` for 2:4,
``sparse-bitmask`` for any other zero pattern (unstructured, 4:8, ...).

The weights are compressed by the package's own compressors (``ModelCompressor`` with a
``SparsityCompressionConfig``), the config entries are the package's own (``targets``,
``ignore``, ``sparsity_structure``, ``global_sparsity``), and every written folder is read back
and compared with the dense one, bit for bit, before it is published.

A legacy format: compressed-tensors <= 0.14, vLLM <= 0.19.0 and transformers <= 5.9 read it
(vLLM 0.19.1 refuses sparse checkpoints; transformers 5.10 requires compressed-tensors 0.15).

Versions (checked, not assumed): compressed-tensors removed its sparse compressors after
0.14.0.1 (0.15 on keep only the config classes, and transformers then loads such a folder with
its compressed Linears left at random initialisation), so the writer needs compressed-tensors
0.14.0.1. With transformers 4.57, ``from_pretrained`` reads ``sparse-24-bitmask`` exactly; it
fails on ``sparse-bitmask`` (the bitmask compressor cannot run on the meta-device model
transformers builds), so that format is read back with compressed-tensors' own
``ModelCompressor.decompress`` (:func:`load_compressed`).
"""

from __future__ import annotations

import shutil
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.errors import BadInputError
from compress.core.io import atomic_folder, check_target
from compress.core.options import option
from compress.core.report import ArtifactRecord, artifact_record, read_report, record_artifact
from compress.core.shared_options import output_option, overwrite_option
from exporters.base import Exporter, register

if TYPE_CHECKING:  # torch is imported where it runs, so the command loads without it
    from torch import nn

SPARSE_24 = "sparse-24-bitmask"
SPARSE_BITMASK = "sparse-bitmask"
NEEDED_VERSION = "0.14.0.1"  # the last compressed-tensors release with sparse compressors
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "config.json")


@dataclass(frozen=True, kw_only=True)
class CompressedExportConfig:
    """``compress export compressed``."""

    folder: Path = option(
        argument=True, help="Pruned or quantized model folder written by compress prune."
    )
    output: Path = output_option(
        MISSING, "Folder for the compressed-tensors checkpoint", short=True, lock=True
    )
    overwrite: bool = overwrite_option()


@register
class CompressedExporter(Exporter):
    """A pruned or quantized folder rewritten in the compressed-tensors format, read back
    bit-identical before it is published, its card re-rendered with the new record."""

    name = "compressed"
    config = CompressedExportConfig
    doc = """Rewrite a folder in the compressed-tensors format: pack-quantized W4A16/W8A16 for a
    quantized folder (compressed-tensors>=0.15), sparse-24-bitmask for 2:4 and sparse-bitmask for
    other patterns (compressed-tensors 0.14.0.1); it is read back bit-identical before it is
    published."""
    formats = ("compressed-tensors",)

    def check(self, source: Path, target: Path, config: CompressedExportConfig) -> None:
        read_report(source)
        check_target(target, config.overwrite)
        if source.resolve() == target.resolve():
            raise BadInputError("--output must differ from the dense folder it is written from")
        require_writer(is_quantized(source))

    def export(self, source: Path, staging: Path, config: CompressedExportConfig) -> ArtifactRecord:
        return compress_into(source, staging)

    def finish(
        self, source: Path, target: Path, record: ArtifactRecord, config: CompressedExportConfig
    ) -> None:
        from cards.builder import write_card

        write_card(target)

    def summary(self, record: ArtifactRecord, config: CompressedExportConfig) -> list[str]:
        details = record["details"]
        return [
            f"{record['format']}: {record['bytes'] / 2**20:.1f} MiB (dense "
            f"{details['dense_bytes'] / 2**20:.1f} MiB, {details['ratio']:.3f}x); pruned Linears "
            f"{details['linear_ratio']:.3f}x; {record['parity']['round_trip']}",
            f"wrote {config.output}",
        ]


def format_for(pattern: str) -> str:
    """The compressed-tensors format that holds ``pattern`` with the fewest bytes: the 2:4
    compressor for 2:4; the bitmask one (which stores any zero pattern) for everything else."""
    return SPARSE_24 if pattern == "2:4" else SPARSE_BITMASK


def is_quantized(folder: Path) -> bool:
    """Whether ``folder`` holds quantized weights (a quantization record beside them)."""
    from compress.algorithms.quant.record import RECORD

    return (Path(folder) / RECORD).is_file()


def require_writer(quantized: bool) -> None:
    """Refuse early, in one line, when the installed compressed-tensors cannot write the
    format of a quantized (``pack-quantized``) or a pruned (sparse) folder."""
    if quantized:
        from exporters.compressed_quant import require_pack_quantized

        require_pack_quantized()
    else:
        require_sparse_compressors()


def require_sparse_compressors() -> None:
    """Refuse early, in one line, when the installed compressed-tensors cannot write the format.

    The sparse formats are legacy: compressed-tensors removed their compressors in 0.15, which
    transformers >= 5.10 requires, so only the transformers 4.57 stack (the ``legacy-sparse``
    extra) writes them.

    Raises:
        BadInputError: compressed-tensors is missing or has no sparse compressors.
    """
    try:
        from compressed_tensors import __version__
        from compressed_tensors.compressors import BaseCompressor
    except ImportError:
        raise BadInputError(legacy_refusal("not installed")) from None
    if SPARSE_BITMASK not in BaseCompressor.registered_names():
        raise BadInputError(legacy_refusal(f"{__version__} installed, without them"))


def legacy_refusal(installed: str) -> str:
    """The one-line refusal of the sparse formats where compressed-tensors is ``installed``."""
    return (
        "the sparse compressed-tensors format (--save-format compressed, export compressed) is "
        f"legacy: its compressors are in compressed-tensors {NEEDED_VERSION} only "
        f"({installed}), which needs transformers<5; install it in a separate environment "
        "with pip install 'compress[legacy-sparse]' (transformers>=4.57,<4.58; make test's "
        ".venv-legacy), or save with --save-format dense"
    )


def sparsity_config(model: nn.Module, report: dict):
    """The package's ``SparsityCompressionConfig`` for a pruned model, as llm-compressor builds
    it: target every ``Linear``, ignore the ones left dense (LM head, ``--skip``) and the
    embeddings, record the structure and the share of zeros over all parameters.

    Raises:
        BadInputError: a pruned layer is not an ``nn.Linear`` (e.g. GPT-2's ``Conv1D``).
    """
    from compressed_tensors.config import SparsityCompressionConfig
    from torch import nn

    pruned = set(report["layers"])
    modules = dict(model.named_modules())
    not_linear = sorted(n for n in pruned if not isinstance(modules.get(n), nn.Linear))
    if not_linear:
        kind = type(modules[not_linear[0]]).__name__ if not_linear[0] in modules else "missing"
        raise BadInputError(
            f"compressed-tensors compresses nn.Linear layers; {not_linear[0]} is {kind} "
            f"({len(not_linear)} pruned layers like it): use --save-format dense, or compress "
            "export onnx"
        )
    dense = [n for n, m in modules.items() if isinstance(m, nn.Linear) and n not in pruned]
    embeddings = [n for n, m in modules.items() if isinstance(m, nn.Embedding)]
    pattern = str(report["summary"]["pattern"])
    return SparsityCompressionConfig.load_from_registry(
        format_for(pattern),
        targets=["Linear"],
        ignore=sorted({*dense, *embeddings}),
        global_sparsity=report["summary"]["model_sparsity"],
        sparsity_structure=pattern,
    )


def load_dense(folder: Path) -> nn.Module:
    """The dense pruned folder in its saved dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()


def load_compressed(folder: Path) -> nn.Module:
    """A compressed-tensors folder as a dense model with its zeros, in the saved dtype.

    ``sparse-24-bitmask`` goes through transformers' own compressed-tensors support
    (``from_pretrained``); ``sparse-bitmask``, which transformers 4.57 cannot load, through
    compressed-tensors' own decompressor into the architecture built from ``config.json``.
    """
    from compressed_tensors import ModelCompressor
    from transformers import AutoConfig, AutoModelForCausalLM

    compressor = ModelCompressor.from_pretrained(str(folder))
    if compressor.sparsity_config.format == SPARSE_24:
        return AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
    compressor.decompress(str(folder), model)
    model.tie_weights()
    return model.eval()


def differing_tensors(a: nn.Module, b: nn.Module) -> list[str]:
    """Names of the state-dict entries that are not bit-identical (or missing) between models."""
    import torch

    theirs = b.state_dict()
    return [
        name
        for name, tensor in a.state_dict().items()
        if name not in theirs
        or theirs[name].dtype != tensor.dtype
        or not torch.equal(theirs[name], tensor)
    ]


def tensor_bytes(
    folder: Path, prefixes: set[str], exclude: tuple[str, ...] = ()
) -> tuple[int, int]:
    """Bytes of every tensor in ``folder``'s safetensors files but ``exclude``, and of those that
    belong to the modules in ``prefixes`` (``weight``, ``bias``, or the compressed
    ``compressed``, ``bitmask``, ``shape``, ``row_offsets``, ``weight_packed``, ``weight_scale``,
    ``weight_shape``)."""
    from safetensors import safe_open

    total = pruned = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.name in exclude:
            continue
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                info = f.get_slice(name)
                size = _element_size(info.get_dtype()) * _numel(info.get_shape())
                total += size
                if name.rpartition(".")[0] in prefixes:
                    pruned += size
    return total, pruned


def _numel(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _element_size(dtype: str) -> int:
    sizes = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2}
    return sizes.get(dtype, 1)


def folder_bytes(folder: Path) -> int:
    """Bytes of every file in ``folder`` (not its subfolders: an ONNX export inside is its own
    format)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())


def measure(folder: Path, pruned_layers: set[str]) -> dict:
    """The folder's bytes and the pruned Linears' bytes (what ``benchmarks/deploy.py`` compares
    against the dense folder)."""
    _, linears = tensor_bytes(folder, pruned_layers)
    return {"folder_bytes": folder_bytes(folder), "linear_bytes": linears}


def write_compressed(source: Path, target: Path, overwrite: bool = False) -> dict:
    """Write ``source`` (a dense folder from ``compress prune``) to ``target`` in the
    compressed-tensors format, atomically; return the record added to ``target``'s report.

    Raises:
        BadInputError: see :func:`compress_into`; also an existing target or ``target`` equal
            to ``source``.
    """
    source, target = Path(source), Path(target)
    config = CompressedExportConfig(folder=source, output=target, overwrite=overwrite)
    CompressedExporter().check(source, target, config)
    with atomic_folder(target) as staging:
        return compress_into(source, staging)


def convert_in_place(folder: Path) -> dict:
    """Replace the dense weights of ``folder`` (a staging folder) by compressed ones."""
    with atomic_folder(folder) as staging:
        return compress_into(folder, staging)


def compress_into(source: Path, staging: Path) -> dict:
    """Fill the empty folder ``staging`` with ``source`` in the compressed-tensors format and
    record it in the report's ``artifacts`` section; return that record.

    A quantized ``source`` is written as ``pack-quantized``
    (:func:`exporters.compressed_quant.write_pack_quantized`). Otherwise ``staging`` gets the compressed weights and ``config.json`` with its
    ``quantization_config.sparsity_config``, plus every other file of ``source`` (tokenizer,
    recipe, report, card). It is read back and compared with the dense model bit for bit.

    Raises:
        BadInputError: not a pruned folder, compressed-tensors cannot write the format, a
            pruned layer is not ``nn.Linear``, or the read-back differs.
    """
    report = read_report(source)
    if is_quantized(source):
        from compress.algorithms.quant.record import read_record
        from exporters.compressed_quant import write_pack_quantized

        return write_pack_quantized(source, staging, read_record(source))
    require_sparse_compressors()
    from compressed_tensors import ModelCompressor

    model = load_dense(source)
    config = sparsity_config(model, report)
    compressor = ModelCompressor.from_pretrained_model(model, sparsity_config_or_format=config)
    state = compressor.compress(model)
    model.save_pretrained(staging, state_dict=state, safe_serialization=True)
    compressor.update_config(str(staging))
    copy_other_files(source, staging)
    differing = differing_tensors(model, load_compressed(staging))
    if differing:
        raise BadInputError(
            f"{config.format} read back differs from {source} in {differing[0]} "
            f"({len(differing)} tensors); nothing was written"
        )
    record = deploy_record(source, staging, config, set(report["layers"]))
    record_artifact(staging, record)
    return record


def copy_other_files(source: Path, staging: Path) -> None:
    """Every file of ``source`` except its weights and model config (written compressed)."""
    for path in source.iterdir():
        if path.is_file() and not any(path.match(p) for p in WEIGHT_FILES):
            shutil.copy2(path, staging / path.name)


def deploy_record(source: Path, written: Path, config, pruned: set[str]) -> ArtifactRecord:
    """The report's ``artifacts`` record of the folder's own weights: every file written with
    its bytes, beside the dense folder's, its read-back check, and how to load it."""
    dense, compressed = measure(source, pruned), measure(written, pruned)
    files = {f.name: f.stat().st_size for f in sorted(Path(written).iterdir()) if f.is_file()}
    return artifact_record(
        format=f"compressed-tensors {config.format}",
        path=".",
        files=files,  # their sum is folder_bytes(written)
        parity={"round_trip": "bit-identical weights"},
        load=load_snippets(config.format),
        details={
            "sparsity_structure": config.sparsity_structure,
            "dense_bytes": dense["folder_bytes"],
            "ratio": compressed["folder_bytes"] / dense["folder_bytes"],
            "linear_bytes": compressed["linear_bytes"],
            "dense_linear_bytes": dense["linear_bytes"],
            "linear_ratio": compressed["linear_bytes"] / max(dense["linear_bytes"], 1),
            "latency": None,
            "package": f"compressed-tensors=={_installed_version()}",
        },
    )


def _installed_version() -> str:
    from compressed_tensors import __version__

    return __version__


def load_snippets(fmt: str) -> list[dict]:
    """How to load a folder of ``fmt`` (``{REPO}`` stands for the repo id or folder)."""
    if fmt == SPARSE_24:
        return [
            {
                "runtime": "transformers <= 5.9 with compressed-tensors <= 0.14 (a legacy format that "
                "later versions cannot read; decompresses on load)",
                "code": 'from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained("{REPO}", dtype="auto")',
            },
            {
                "runtime": "vLLM <= 0.19.0 (0.19.1 refuses sparse checkpoints; not run here)",
                "code": 'from vllm import LLM\n\nllm = LLM(model="{REPO}")',
            },
        ]
    code = (
        "from compressed_tensors import ModelCompressor\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n\n"
        'path = "{REPO}"  # a local copy of the folder\n'
        "config = AutoConfig.from_pretrained(path)\n"
        "del config.quantization_config  # build the dense architecture\n"
        "model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)\n"
        "ModelCompressor.from_pretrained(path).decompress(path, model)\n"
        "model.tie_weights()"
    )
    return [
        {
            "runtime": "compressed-tensors <= 0.14's own decompressor (a legacy format that later "
            "versions cannot read; transformers 4.57's from_pretrained cannot read "
            "sparse-bitmask; `exporters.compressed.load_compressed` does the same)",
            "code": code,
        }
    ]
