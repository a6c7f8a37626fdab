"""int8 graphs from an fp32 export, and what they cost and save. Two ONNX Runtime methods, both
without calibration data:

- ``int8`` -- dynamic quantization (``quantize_dynamic``): MatMul and Gather weights in int8 with
  per-output-channel scales, activations quantized on the fly per tensor. Smallest file; small
  LLMs with activation outliers can lose a lot (SmolLM2-135M: perplexity 22.2 -> 42.2 here).
- ``int8-weights`` -- weight-only (``MatMulNBitsQuantizer``, 8 bits, symmetric blocks of 128
  along the input dimension): MatMul weights in int8, activations stay float (SmolLM2-135M: 22.2
  -> 22.3 here); embeddings stay float, so the file is larger.

The comparison runs the fp32 and int8 graphs in the same process on the same inputs: file size,
CPU prefill latency, greedy generation throughput, and perplexity on held-out text.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from compress.core.report import perplexity_change
from exporters.onnx import Int8Method
from exporters.onnx_files import INT8_FILE, MODEL_FILE, model_bytes
from exporters.timing import machine, measure_latency

TWO_GIB = 2 * 2**30  # protobuf's limit: larger graphs keep their weights in external data


METHODS = {
    Int8Method.int8.value: "onnxruntime quantize_dynamic: QInt8 weights per channel, dynamic "
    "activations",
    Int8Method.int8_weights.value: "onnxruntime MatMulNBits: 8-bit weights, symmetric blocks of 128",
}


def quantize_int8(folder: Path, method: str = "int8") -> Path:
    """Write ``folder/model_int8.onnx`` from ``folder/model.onnx`` with ``method`` (a key of
    :data:`METHODS`); return its path."""
    source, target = Path(folder) / MODEL_FILE, Path(folder) / INT8_FILE
    external = model_bytes(folder) > TWO_GIB
    if method == Int8Method.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=external,
        )
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(source), bits=8, block_size=128, is_symmetric=True)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=external)
    return target


@torch.no_grad()
def window_perplexity(model, windows: torch.Tensor) -> float:
    """Perplexity over ``windows`` ``(N, T)``, each window scored on its own.

    The protocol of :func:`evaluators.perplexity.perplexity_of_ids` (non-overlapping windows,
    mean next-token NLL over all of them, exponentiated), through the ``__call__`` interface
    PyTorch and ORT models share; that function reads its device from a torch module's
    embeddings, which an ORT model does not have.
    """
    total_nll, total_tokens = 0.0, 0
    for ids in windows:
        ids = ids.unsqueeze(0)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        total_nll += nll
        total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / total_tokens)


def eval_windows(tokenizer, source: str, windows: int, seqlen: int) -> torch.Tensor:
    """The first ``windows`` non-overlapping ``seqlen``-token windows of ``source``'s test split."""
    from compress.calibration import load_texts, tokenize_stream
    from compress.core.errors import BadInputError

    stream = tokenize_stream(tokenizer, load_texts(source, split="test"))
    if len(stream) < windows * seqlen:
        raise BadInputError(
            f"{source!r} (test) has {len(stream):,} tokens, fewer than {windows} x {seqlen}; "
            "lower --eval-windows/--eval-seqlen"
        )
    return stream[: windows * seqlen].view(windows, seqlen)


def compare_int8(
    fp32_model,
    int8_model,
    folder: Path,
    windows: torch.Tensor,
    latency_ids: torch.Tensor,
    new_tokens: int,
    repeats: int,
    pad_token_id: int,
) -> dict:
    """Size, latency and perplexity of the int8 graph next to the fp32 one it came from (the
    perplexity without its protocol, which the caller knows)."""
    fp32_bytes, int8_bytes = model_bytes(folder, MODEL_FILE), model_bytes(folder, INT8_FILE)
    ppl_fp32 = window_perplexity(fp32_model, windows)
    ppl_int8 = window_perplexity(int8_model, windows)
    return {
        "file": INT8_FILE,
        "bytes": {"fp32": fp32_bytes, "int8": int8_bytes},
        "size_ratio": int8_bytes / fp32_bytes,
        "machine": machine(),
        "latency": {
            "fp32": measure_latency(fp32_model, latency_ids, new_tokens, pad_token_id, repeats),
            "int8": measure_latency(int8_model, latency_ids, new_tokens, pad_token_id, repeats),
        },
        "perplexity": {"fp32": ppl_fp32, "int8": ppl_int8, **perplexity_change(ppl_fp32, ppl_int8)},
    }
