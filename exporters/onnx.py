"""Export a saved model folder to ONNX and prove, in ONNX Runtime, that it computes the same thing.

Steps (:func:`export_onnx`): optimum-onnx's ``main_export`` (task ``text-generation-with-past`` or
``text-generation``, float32) into a temporary folder; the tokenizer beside it; the parity check of
:mod:`exporters.parity` against the PyTorch model; optionally int8 dynamic quantization measured by
:mod:`exporters.quantize`; ``export_report.json``; then the folder is renamed into place.

optimum's own validation only logs a tolerance miss as a warning and keeps the export; here a miss
raises :class:`ExportParityError` after marking the report, so a bad export never passes silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from compress.core.errors import BadInputError, ExportParityError
from compress.core.io import atomic_folder, write_json_atomic
from compress.core.options import option
from compress.core.report import (
    REPORT_NAME,
    export_section,
    now_iso,
    package_versions,
    perplexity_protocol,
    update_report,
)
from exporters.onnx_files import (
    INT8_FILE,
    MODEL_FILE,
    has_past,
    model_bytes,
    opset,
    size_note,
    weight_zeros,
)

EXPORT_REPORT = "export_report.json"
EXPORT_FORMAT = "compress.export/1"


class Int8Method(str, Enum):
    """The int8 graphs :mod:`exporters.quantize` writes (its ``METHODS`` describe them)."""

    int8 = "int8"
    int8_weights = "int8-weights"


QUANTIZATIONS = tuple(method.value for method in Int8Method)


def _enum_value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


@dataclass
class OnnxExportConfig:
    """Everything an export does; saved in export_report.json."""

    with_past: bool = option(
        True,
        flags="--with-past",
        negative="--no-past",
        help="Export past key/values (fast generation).",
    )
    quantize: str | None = option(  # a QUANTIZATIONS name (plain text in export_report.json)
        None,
        help="Also write model_int8.onnx and measure it: int8 = ORT dynamic quantization "
        "(weights and activations); int8-weights = 8-bit weights only (MatMulNBits).",
        cli_type=Int8Method | None,
        from_cli=_enum_value,
    )
    opset: int | None = option(None, help="ONNX opset (default: optimum's for the architecture).")
    atol: float = 1e-4  # max |logit difference| allowed between PyTorch and ORT (fp32)
    max_new_tokens: int = 8  # greedy tokens compared per parity prompt
    eval_source: str = option("wikipedia", help="Held-out text for the int8 perplexity change.")
    eval_windows: int = option(4, help="Perplexity windows for --quantize.")
    eval_seqlen: int = option(256, help="Tokens per perplexity window.")
    latency_tokens: int = 64  # prompt length for the latency comparison
    latency_new_tokens: int = 16
    latency_repeats: int = 3  # timed runs per figure (median), after one warm-up run

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            choices = " or ".join(QUANTIZATIONS)
            raise BadInputError(f"--quantize {self.quantize!r} is not supported: use {choices}")
        if self.opset is not None and self.opset < 14:
            raise BadInputError(f"--opset {self.opset} is too old for decoders: use 14 or newer")
        positive = ("max_new_tokens", "eval_windows", "eval_seqlen", "latency_tokens")
        for name in (*positive, "latency_new_tokens", "latency_repeats"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def task(self) -> str:
        return "text-generation-with-past" if self.with_past else "text-generation"


def export_onnx(
    folder: Path, output: Path, config: OnnxExportConfig, overwrite: bool = False
) -> dict:
    """Export ``folder`` to ``output``, check it in ONNX Runtime, and return export_report.json.

    Raises:
        BadInputError: ``folder`` is not a model folder, or ``output`` exists (without overwrite).
        ExportParityError: ORT disagrees with PyTorch; ``output`` is kept with a failed report.
    """
    folder, output = Path(folder).resolve(), Path(output).resolve()
    _check_paths(folder, output, overwrite)
    with atomic_folder(output) as staging:
        report = _export_and_check(folder, staging, config)
    if (folder / REPORT_NAME).is_file():
        update_report(folder, "export", export_section(_relative_to(output, folder)))
    if not report["parity"]["passed"]:
        raise ExportParityError(_parity_message(report["parity"], output))
    return report


def _export_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    from optimum.exporters.onnx import main_export

    from compress.models import load_model
    from exporters.parity import check_parity, encode_prompts

    loaded = load_model(str(folder), device="cpu", dtype="float32")
    main_export(
        str(folder),
        staging,
        task=config.task,
        opset=config.opset,
        device="cpu",
        do_validation=False,  # replaced by the stricter check below
        library_name="transformers",
    )
    loaded.tokenizer.save_pretrained(staging)
    pad_token_id = _pad_token_id(loaded.tokenizer)
    ort_model = load_ort(staging, MODEL_FILE)
    parity = check_parity(
        loaded.model,
        ort_model,
        encode_prompts(loaded.tokenizer),
        config.max_new_tokens,
        config.atol,
        pad_token_id,
    )
    fp32_bytes = model_bytes(staging)
    zeros = weight_zeros(staging / MODEL_FILE)
    report = {
        "format": EXPORT_FORMAT,
        "source": str(folder),
        "config": asdict(config),
        "task": config.task,
        "dtype": "float32",
        "opset": opset(staging / MODEL_FILE),
        "files": {MODEL_FILE: fp32_bytes},
        "parity": parity.to_dict(),
        "size": {"fp32_bytes": fp32_bytes, **zeros, "note": size_note(fp32_bytes, zeros)},
        "versions": package_versions(),
        "created": now_iso(),
    }
    if parity.passed and config.quantize:
        report["int8"] = _quantize_and_measure(staging, ort_model, loaded.tokenizer, config)
        report["files"][INT8_FILE] = report["int8"]["bytes"]["int8"]
    write_json_atomic(staging / EXPORT_REPORT, report)
    return report


def _quantize_and_measure(staging: Path, ort_model, tokenizer, config: OnnxExportConfig) -> dict:
    from exporters.quantize import METHODS, compare_int8, eval_windows, quantize_int8

    windows = eval_windows(tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen)
    quantize_int8(staging, config.quantize)
    int8_model = load_ort(staging, INT8_FILE)
    latency_ids = windows[:1, : config.latency_tokens]
    result = compare_int8(
        ort_model,
        int8_model,
        staging,
        windows,
        latency_ids,
        config.latency_new_tokens,
        config.latency_repeats,
        _pad_token_id(tokenizer),
    )
    count, seqlen = windows.shape
    measured_on = perplexity_protocol(config.eval_source, "test", seqlen, count, windows.numel())
    result["perplexity"] = {**measured_on, **result["perplexity"]}
    return {"quantize": config.quantize, "method": METHODS[config.quantize], **result}


def load_ort(folder: Path, file_name: str = MODEL_FILE, threads: int | None = None):
    """An ``ORTModelForCausalLM`` on the CPU for one graph file of an export folder.

    It uses the key/value cache when the graph was exported with past key/values, and
    ``threads`` intra-op threads (default: as many as torch uses, so timings compare like with
    like).
    """
    import onnxruntime
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ORTModelForCausalLM.from_pretrained(
        folder,
        file_name=file_name,
        use_cache=has_past(Path(folder) / file_name),
        session_options=options,
    )


def generate_text(folder: Path, prompt: str, max_new_tokens: int, int8: bool = False) -> str:
    """Greedy continuation of ``prompt`` by an exported model, in ONNX Runtime.

    Raises:
        BadInputError: ``folder`` holds no export (or no int8 graph when ``int8``).
    """
    import torch
    from transformers import AutoTokenizer

    folder = Path(folder)
    file_name = INT8_FILE if int8 else MODEL_FILE
    if not (folder / file_name).is_file():
        hint = (
            "run compress export onnx DIR --quantize int8 (or int8-weights)"
            if int8
            else "run compress export onnx"
        )
        raise BadInputError(f"{folder} has no {file_name}: {hint} first")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = load_ort(folder, file_name)
    inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=_pad_token_id(tokenizer),
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def _check_paths(folder: Path, output: Path, overwrite: bool) -> None:
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} has no config.json: point to a saved model folder")
    if output == folder or folder.is_relative_to(output):
        raise BadInputError(f"--output {output} would replace the model folder; pick another path")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise BadInputError(f"--output {output} exists and is not empty; pass --overwrite")


def _pad_token_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _relative_to(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def _parity_message(parity: dict, output: Path) -> str:
    worst = max(parity["max_abs_logit_diff"], parity["max_abs_decode_logit_diff"])
    tokens = "same greedy tokens" if parity["tokens_equal"] else "different greedy tokens"
    return (
        f"ONNX export disagrees with PyTorch: max |logit diff| {worst:.3g} "
        f"(limit {parity['atol']:g}), {tokens}; marked failed in {output / EXPORT_REPORT}"
    )
