"""int8 and int4 graphs from an fp32 export, and what they cost and save. Three ONNX Runtime
methods, all without calibration data:

- ``int8`` -- dynamic quantization (``quantize_dynamic``): MatMul and Gather weights in int8 with
  per-output-channel scales, activations quantized on the fly per tensor. Smallest file; small
  LLMs with activation outliers can lose a lot (SmolLM2-135M's perplexity nearly doubles).
- ``int8-weights`` -- weight-only (``MatMulNBitsQuantizer``, 8 bits, symmetric blocks of 128
  along the input dimension): MatMul weights in int8, activations stay float (SmolLM2-135M's
  perplexity barely moves); embeddings stay float, so the file is larger.
- ``int4`` -- weight-only 4-bit (``MatMulNBitsQuantizer``, symmetric blocks of ``block_size``,
  default 32, int8 compute for the activations, ``accuracy_level`` 4 as onnxruntime-genai's
  builder sets it for CPUs). A tied embedding reads the LM head's 4-bit blocks through
  ``GatherBlockQuantized`` (:mod:`exporters.onnx.tied`), so the matrix is stored once, in 4 bits.

The comparison runs the fp32 and int8 graphs in the same process on the same inputs: file size,
CPU prefill latency, greedy generation throughput, and perplexity on held-out text.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from compress.core.report import perplexity_change
from exporters.onnx.files import MODEL_FILE, label, model_bytes, quantized_file
from exporters.onnx.timing import machine, measure_latency

TWO_GIB = 2 * 2**30  # protobuf's limit: larger graphs keep their weights in external data


METHODS = {
    "int8": "onnxruntime quantize_dynamic: QInt8 weights per channel, dynamic activations",
    "int8-weights": "onnxruntime MatMulNBits: 8-bit weights, symmetric blocks of 128",
    "int4": "onnxruntime MatMulNBits: 4-bit weights, symmetric blocks of {block_size}, "
    "accuracy level 4; tied embedding through GatherBlockQuantized",
}
NBITS = {"int8-weights": (8, 128), "int4": (4, None)}  # bits, block size (None: the flag's)


def quantize_int8(folder: Path, method: str = "int8", block_size: int = 32) -> Path:
    """Write ``folder/model_int8.onnx`` (``model_int4.onnx`` for int4) from
    ``folder/model.onnx`` with ``method`` (a key of :data:`METHODS`); return its path."""
    source = Path(folder) / MODEL_FILE
    target = Path(folder) / quantized_file(label(method))
    external = model_bytes(folder) > TWO_GIB
    if method == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=external,
        )
    else:
        bits, block = NBITS[method]
        _weight_only(source, target, bits, block or block_size, external)
    return target


def _weight_only(source: Path, target: Path, bits: int, block_size: int, external: bool) -> None:
    """MatMulNBits weights; the LM head quantized too and shared with a tied embedding."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from exporters.onnx.tied import materialise_head, share_quantized

    model = onnx.load(str(source))
    materialise_head(model)  # a head reading Transpose(embedding) gets packed too
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4 if bits == 4 else None,
    )
    quantizer.process()
    share_quantized(quantizer.model.model)
    quantizer.model.save_model_to_file(str(target), use_external_data_format=external)


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
    from compress.core.errors import BadInputError
    from compress.data.calibration import load_texts, tokenize_stream

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
    tag: str = "int8",
) -> dict:
    """Size, latency and perplexity of the quantized graph (``tag``: int8 or int4, the key its
    figures are filed under) next to the fp32 one it came from."""
    file_name = quantized_file(tag)
    fp32_bytes, int8_bytes = model_bytes(folder, MODEL_FILE), model_bytes(folder, file_name)
    ppl_fp32 = window_perplexity(fp32_model, windows)
    ppl_int8 = window_perplexity(int8_model, windows)
    return {
        "file": file_name,
        "bytes": {"fp32": fp32_bytes, tag: int8_bytes},
        "size_ratio": int8_bytes / fp32_bytes,
        "machine": machine(),
        "latency": {
            "fp32": measure_latency(fp32_model, latency_ids, new_tokens, pad_token_id, repeats),
            tag: measure_latency(int8_model, latency_ids, new_tokens, pad_token_id, repeats),
        },
        "perplexity": {
            "windows": int(windows.shape[0]),
            "seqlen": int(windows.shape[1]),
            "tokens": int(windows.numel()),
            "fp32": ppl_fp32,
            tag: ppl_int8,
            **perplexity_change(ppl_fp32, ppl_int8),
        },
    }
