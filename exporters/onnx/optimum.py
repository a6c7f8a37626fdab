"""The optimum route of ``export onnx``: optimum-onnx's ``main_export`` (task
``text-generation-with-past`` or ``text-generation``, float32), the tied embedding and LM head
stored once (:mod:`exporters.onnx.tied`), the parity check of :mod:`exporters.onnx.parity`
against the PyTorch model, and optionally an int8 or int4 graph measured by
:mod:`exporters.onnx.quantize` (int4 parity-checked against PyTorch too, within ``int4_atol``).
Also the loading and greedy generation of such an export in ONNX Runtime (``run-onnx``).
"""

from __future__ import annotations

from pathlib import Path

from compress.core.errors import BadInputError
from exporters.onnx.config import OnnxExportConfig, require_optimum
from exporters.onnx.files import (
    MODEL_FILE,
    has_past,
    label,
    model_bytes,
    opset,
    quantized_file,
    size_note,
    weight_zeros,
)
from exporters.onnx.record import export_report, measured_perplexity
from exporters.onnx.tied import share_in_file


def export_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    """Export ``folder`` into ``staging`` and check it; returns its export_report.json."""
    from optimum.exporters.onnx import main_export

    from compress.model.loading import check_model_folder, check_safetensors, load_model
    from exporters.onnx.parity import check_parity, encode_prompts

    check_model_folder(folder)
    check_safetensors(folder)
    main_export(  # loads its own copy of the model: nothing is loaded here until it returns
        str(folder),
        staging,
        task=config.task,
        opset=config.opset,
        device="cpu",
        do_validation=False,  # replaced by the stricter check below
        library_name="transformers",
    )
    tied = share_in_file(staging / MODEL_FILE)
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    loaded.tokenizer.save_pretrained(staging)
    pad_id = pad_token_id(loaded.tokenizer)
    ort_model = load_ort(staging, MODEL_FILE)
    parity = check_parity(
        loaded.model,
        ort_model,
        encode_prompts(loaded.tokenizer),
        config.max_new_tokens,
        config.atol,
        pad_id,
    )
    fp32_bytes = model_bytes(staging)
    zeros = weight_zeros(staging / MODEL_FILE)
    report = export_report(
        folder,
        config,
        task=config.task,
        dtype="float32",
        opset=opset(staging / MODEL_FILE),
        files={MODEL_FILE: fp32_bytes},
        parity=parity.to_dict(),
        size={"fp32_bytes": fp32_bytes, **zeros, "note": size_note(fp32_bytes, zeros)},
        tied_embedding=tied,
    )
    if parity.passed and config.quantize:
        tag = label(config.quantize)
        report[tag] = _quantize_and_measure(folder, staging, ort_model, loaded, config)
        report["files"][quantized_file(tag)] = report[tag]["bytes"][tag]
    return report


def _quantize_and_measure(
    folder: Path, staging: Path, ort_model, loaded, config: OnnxExportConfig
) -> dict:
    """The quantized graph, measured: ORT's own rounding of the fp32 graph, or for a quantized
    folder its recorded integers (:mod:`exporters.onnx.exact`), then parity-checked as strictly
    as the fp32 graph (both compute with the folder's weights)."""
    from compress.algorithms.quant.record import read_record
    from exporters.onnx import exact
    from exporters.onnx.parity import check_parity, encode_prompts
    from exporters.onnx.quantize import METHODS, compare_int8, eval_windows, quantize_int8

    tokenizer, tag = loaded.tokenizer, label(config.quantize)
    windows = eval_windows(tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen)
    record = read_record(folder)
    if record is None:
        quantize_int8(staging, config.quantize, config.block_size)
        method = METHODS[config.quantize].format(block_size=config.block_size)
        block_size = config.block_size
    else:
        exact.write_graph(staging, folder, record, tag)
        method = exact.record_method(record.grid.bits, record.grid.group_size)
        block_size = record.grid.group_size
    quantized = load_ort(staging, quantized_file(tag))
    latency_ids = windows[:1, : config.latency_tokens]
    result = compare_int8(
        ort_model,
        quantized,
        staging,
        windows,
        latency_ids,
        config.latency_new_tokens,
        config.latency_repeats,
        pad_token_id(tokenizer),
        tag,
    )
    result["perplexity"] = measured_perplexity(config, windows, **result["perplexity"])
    if tag == "int4" or record is not None:
        parity = check_parity(
            loaded.model,
            quantized,
            encode_prompts(tokenizer),
            config.max_new_tokens,
            config.exact_atol if record else config.int4_atol,
            pad_token_id(tokenizer),
            quantized=record is None,
        )
        result["parity"] = parity.to_dict()
        result["block_size"] = block_size
    return {"quantize": config.quantize, "method": method, **result}


def load_ort(folder: Path, file_name: str = MODEL_FILE, threads: int | None = None):
    """An ``ORTModelForCausalLM`` on the CPU for one graph file of an export folder.

    It uses the key/value cache when the graph was exported with past key/values, and
    ``threads`` intra-op threads (default: as many as torch uses, so timings compare like with
    like).
    """
    require_optimum("running an optimum-onnx export")
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


def generate_text(
    folder: Path, prompt: str, max_new_tokens: int, int8: bool = False, int4: bool = False
) -> str:
    """Greedy continuation of ``prompt`` by an exported model, in ONNX Runtime.

    Raises:
        BadInputError: ``folder`` holds no export (or no int8/int4 graph when asked for one), or
            the prompt and ``max_new_tokens`` exceed the model's context.
    """
    import torch

    from compress.model.compat import load_tokenizer
    from exporters.onnx.context import check_fits, config_context

    folder = Path(folder)
    tag = "int4" if int4 else "int8" if int8 else None
    file_name = quantized_file(tag) if tag else MODEL_FILE
    if not (folder / file_name).is_file():
        hints = {
            "int8": "run compress export onnx DIR --quantize int8 (or int8-weights)",
            "int4": "run compress export onnx DIR --quantize int4",
            None: "run compress export onnx",
        }
        raise BadInputError(f"{folder} has no {file_name}: {hints[tag]} first")
    tokenizer = load_tokenizer(folder)
    inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
    check_fits(inputs["input_ids"].shape[1], max_new_tokens, config_context(folder))
    model = load_ort(folder, file_name)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id(tokenizer),
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def pad_token_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0
