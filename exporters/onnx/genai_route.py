"""The genai route of ``export onnx``: onnxruntime-genai's model builder (:mod:`exporters.onnx.genai`,
fp32 or int4), checked against PyTorch through its generator by the same parity check as the
optimum route, and for int4 its perplexity against PyTorch's on the shared protocol."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.errors import ExportParityError
from exporters.onnx.config import OnnxExportConfig
from exporters.onnx.files import MODEL_FILE, model_bytes
from exporters.onnx.optimum import pad_token_id
from exporters.onnx.record import export_report, measured_perplexity

if TYPE_CHECKING:
    from exporters.onnx.genai import GenaiLM
    from exporters.onnx.parity import ParityResult


def build_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    """Build with onnxruntime-genai's model builder; parity (and for int4 perplexity against
    PyTorch's) through its generator."""
    from compress.model.loading import load_model
    from exporters.onnx import genai
    from exporters.onnx.genai_quant import check_eight_bit, int4_quant_config
    from exporters.onnx.quantize import eval_windows, window_perplexity

    precision = "int4" if config.quantize == "int4" else "fp32"
    provider = genai.execution_provider()
    loaded = load_model(str(folder), device="cpu", dtype="float32")  # refuses damaged weights
    int4 = precision == "int4"
    layers = loaded.model.config.num_hidden_layers
    int8 = config.int8_projections if int4 else ()
    quant = int4_quant_config(config.genai_algo, config.block_size, int8, layers) if int4 else None
    genai.build(folder, staging, precision, provider, quant)
    eight_bit = check_eight_bit(staging, int8, layers) if int4 else {}
    loaded.tokenizer.save_pretrained(staging)  # the ids PyTorch saw, for run-onnx too
    model, parity = genai_parity(staging, loaded, config, int4)
    size = model_bytes(staging)
    report = export_report(
        folder,
        config,
        runtime="onnxruntime-genai",
        precision=precision,
        algorithm=config.genai_algo if int4 else None,
        int8_projections=list(int8),
        int8_matmuls=eight_bit,
        execution_provider=provider,
        files={MODEL_FILE: size},
        parity=parity.to_dict(),
        size={f"{precision}_bytes": size},
    )
    if parity.passed and int4:
        windows = eval_windows(
            loaded.tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen
        )
        before = window_perplexity(loaded.model, windows)
        after = window_perplexity(model, windows)
        report["perplexity"] = measured_perplexity(
            config,
            windows,
            pytorch_fp32=before,
            int4=after,
            relative_change=(after - before) / before,
        )
    return report


def genai_parity(
    staging: Path, loaded, config: OnnxExportConfig, int4: bool
) -> tuple[GenaiLM, ParityResult]:
    """The build loaded in onnxruntime-genai and its parity check against PyTorch.

    Raises:
        ExportParityError: the runtime fails inside the check; the first line of its message.
    """
    from exporters.onnx import genai
    from exporters.onnx.parity import check_parity, encode_prompts

    try:
        model = genai.GenaiLM(staging)
        parity = check_parity(
            loaded.model,
            model,
            encode_prompts(loaded.tokenizer),
            config.max_new_tokens,
            config.int4_atol if int4 else config.atol,
            pad_token_id(loaded.tokenizer),
            quantized=int4,
        )
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportParityError(
            f"onnxruntime-genai failed in the parity check against PyTorch: {first}"
        ) from error
    return model, parity
