"""The genai route of ``export onnx``: onnxruntime-genai's model builder (:mod:`exporters.onnx.genai`,
fp32 or int4; a quantized folder's own int4 or int8 integers through
:mod:`exporters.onnx.genai_exact`), checked against PyTorch through its generator by the same
parity check as the optimum route, and for a quantized build its perplexity against PyTorch's
on the shared protocol."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from compress.core.errors import ExportParityError
from exporters.onnx.config import OnnxExportConfig
from exporters.onnx.files import MODEL_FILE, model_bytes
from exporters.onnx.optimum import pad_token_id
from exporters.onnx.quantize import window_perplexity
from exporters.onnx.record import export_report, measured_perplexity

if TYPE_CHECKING:
    from exporters.onnx.genai import GenaiLM
    from exporters.onnx.parity import ParityResult, Reference


def build_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    """Build with onnxruntime-genai's model builder; parity (and for a quantized build
    perplexity against PyTorch's) through its generator.

    A quantized folder (one with a quantization record) is built from its own integers
    (:mod:`exporters.onnx.genai_exact`), and then computes what PyTorch computes on the folder:
    its parity is judged as strictly as an fp32 build's.

    One copy of the model at a time: the builder runs with nothing loaded here, then the PyTorch
    reference is computed (onloaded block by block where float32 does not fit in RAM,
    :func:`compress.model.loading.load_model`) and freed before the build is loaded.
    """
    from compress.algorithms.quant.record import read_record
    from compress.model.loading import check_model_folder, check_safetensors
    from exporters.onnx import genai

    check_model_folder(folder)
    check_safetensors(folder)
    record = read_record(folder) if config.quantize else None
    provider = genai.execution_provider()
    if record is not None:
        fields = _build_exact(folder, staging, record, provider)
    else:
        fields = _build(folder, staging, config, provider)
    quantized = config.quantize is not None
    reference = pytorch_reference(folder, staging, config, quantized)
    model, parity = genai_parity(staging, reference, config, quantized, exact=record is not None)
    size = model_bytes(staging)
    report = export_report(
        folder,
        config,
        runtime="onnxruntime-genai",
        **fields,
        execution_provider=provider,
        files={MODEL_FILE: size},
        parity=parity.to_dict(),
        size={f"{fields['precision']}_bytes": size},
    )
    if parity.passed and quantized:
        after = window_perplexity(model, reference.windows)
        before = reference.perplexity
        report["perplexity"] = measured_perplexity(
            config,
            reference.windows,
            pytorch_fp32=before,
            **{fields["precision"]: after},
            relative_change=(after - before) / before,
        )
    return report


def _build(folder: Path, staging: Path, config: OnnxExportConfig, provider: str) -> dict:
    """The builder's fp32 or int4 build (its own rounding); the report's fields about it."""
    from transformers import AutoConfig

    from exporters.onnx import genai
    from exporters.onnx.genai_quant import check_eight_bit, int4_quant_config

    int4 = config.quantize == "int4"
    precision = "int4" if int4 else "fp32"
    layers = AutoConfig.from_pretrained(folder).num_hidden_layers
    int8 = config.int8_projections if int4 else ()
    quant = int4_quant_config(config.genai_algo, config.block_size, int8, layers) if int4 else None
    genai.build(folder, staging, precision, provider, quant)
    eight_bit = check_eight_bit(staging, int8, layers) if int4 else {}
    return {
        "precision": precision,
        "algorithm": config.genai_algo if int4 else None,
        "int8_projections": list(int8),
        "int8_matmuls": eight_bit,
    }


def _build_exact(folder: Path, staging: Path, record, provider: str) -> dict:
    """The build of a quantized folder from its recorded integers, through a GPTQ checkpoint
    written beside the build and removed after it; the report's fields about it."""
    import shutil

    from exporters.onnx import genai, genai_exact
    from exporters.onnx.exact import record_method

    checkpoint = staging / ".checkpoint"
    genai_exact.write_checkpoint(folder, checkpoint, record)
    grid = record.grid
    genai.build(checkpoint, staging, grid.name, provider, genai_exact.quant_config(grid))
    shutil.rmtree(checkpoint)
    return {
        "precision": grid.name,
        "algorithm": "exact",
        "method": record_method(grid.bits, grid.group_size),
        "block_size": grid.group_size,
        "int8_projections": [],
        "int8_matmuls": {},
    }


@dataclass
class PytorchReference:
    """What the float32 PyTorch model computed, kept once the model itself is freed."""

    outputs: list[Reference]  # per parity prompt
    pad_token_id: int
    windows: torch.Tensor | None = None  # quantized builds: the perplexity windows
    perplexity: float | None = None  # quantized builds: PyTorch's perplexity on them


def pytorch_reference(
    folder: Path, staging: Path, config: OnnxExportConfig, quantized: bool
) -> PytorchReference:
    """Load ``folder`` in float32 (refusing damaged weights), save its tokenizer into
    ``staging`` (the ids PyTorch saw, for run-onnx too) and compute the reference; the model is
    freed on return."""
    from compress.model.loading import load_model
    from compress.model.placement import release_free_memory
    from exporters.onnx.parity import encode_prompts, reference_outputs
    from exporters.onnx.quantize import eval_windows

    loaded = load_model(str(folder), device="cpu", dtype="float32")
    tokenizer = loaded.tokenizer
    tokenizer.save_pretrained(staging)
    pad = pad_token_id(tokenizer)
    outputs = reference_outputs(loaded.model, encode_prompts(tokenizer), config.max_new_tokens, pad)
    reference = PytorchReference(outputs, pad)
    if quantized:
        windows = eval_windows(
            tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen
        )
        reference.windows = windows
        reference.perplexity = window_perplexity(loaded.model, windows)
    del loaded
    gc.collect()
    release_free_memory()
    return reference


def genai_parity(
    staging: Path,
    reference: PytorchReference,
    config: OnnxExportConfig,
    int4: bool,
    exact: bool = False,
) -> tuple[GenaiLM, ParityResult]:
    """The build loaded in onnxruntime-genai and its parity check against PyTorch's outputs:
    an fp32 build's, an int4 build's (judged on the mean), or with ``exact`` a quantized
    folder's build from its own integers (the max and the tokens, within ``exact_atol``).

    Raises:
        ExportParityError: the runtime fails inside the check; the first line of its message.
    """
    from exporters.onnx import genai
    from exporters.onnx.parity import compare_parity

    try:
        model = genai.GenaiLM(staging)
        parity = compare_parity(
            reference.outputs,
            model,
            config.max_new_tokens,
            config.exact_atol if exact else config.int4_atol if int4 else config.atol,
            reference.pad_token_id,
            quantized=int4 and not exact,
        )
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportParityError(
            f"onnxruntime-genai failed in the parity check against PyTorch: {first}"
        ) from error
    return model, parity
