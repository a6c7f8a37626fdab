"""One stored copy of a tied input embedding and LM head in an exported ONNX graph.

A tied model's embedding ``(V, H)`` is both the table of the input ``Gather`` and, transposed,
the ``B`` of the LM head's ``MatMul``. The torch exporter can write that matrix twice (a
``(V, H)`` initializer for the Gather and an ``(H, V)`` one for the MatMul; optimum then warns
"different candidate ONNX initializers ... for the tied weights"), which for a 262k-token
vocabulary is most of the file. Two rewrites keep one copy:

- fp32 (:func:`share_float`): the MatMul reads ``Transpose(embedding)`` instead of its own
  copy; ONNX Runtime folds the Transpose once at load time, so only the file shrinks.
- MatMulNBits graphs (:func:`share_quantized`): the Gather becomes ``GatherBlockQuantized``
  over the LM head's packed 4- or 8-bit blocks and scales (the layout onnxruntime-genai's model
  builder uses), so the float embedding leaves the file altogether. The quantizer only takes a
  MatMul whose ``B`` is an initializer, so :func:`materialise_head` first gives the head its own
  ``(H, V)`` copy for the quantizer to pack.

All functions edit an ``onnx.ModelProto`` in place and return what they changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.onnx.files import model_bytes, model_files

MS_DOMAIN = "com.microsoft"


@dataclass
class TiedPair:
    """The embedding Gather and the LM head MatMul that compute with one matrix."""

    gather: object  # onnx.NodeProto
    matmul: object  # onnx.NodeProto
    embedding: str  # the Gather's (V, H) initializer
    head: str  # what the MatMul reads as B: an initializer, or the Transpose's output


def _initializers(model) -> dict:
    return {init.name: init for init in model.graph.initializer}


def _producers(model) -> dict:
    return {out: node for node in model.graph.node for out in node.output}


def _logits_matmul(model):
    """The MatMul (or MatMulNBits) that writes the graph's ``logits`` output, or None."""
    producers = _producers(model)
    node = producers.get("logits")
    return node if node is not None and node.op_type in ("MatMul", "MatMulNBits") else None


def _embedding_gather(model, initializers: dict):
    """The Gather that looks ``input_ids`` up in a 2-D initializer, or None."""
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == "input_ids":
            if node.input[0] in initializers and len(initializers[node.input[0]].dims) == 2:
                return node
    return None


def find_pair(model) -> TiedPair | None:
    """The embedding Gather and the fp32 LM head MatMul, whether or not they already share."""
    initializers = _initializers(model)
    gather, matmul = _embedding_gather(model, initializers), _logits_matmul(model)
    if gather is None or matmul is None or matmul.op_type != "MatMul":
        return None
    return TiedPair(gather, matmul, gather.input[0], matmul.input[1])


def _array(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def share_float(model) -> int:
    """Point a tied LM head at ``Transpose(embedding)``; return the bytes of the copy removed.

    Only when the head's own ``(H, V)`` initializer equals the embedding transposed, bit for bit
    (an untied head is left alone); 0 when there is nothing to share.
    """
    from onnx import helper

    pair = find_pair(model)
    initializers = _initializers(model)
    if pair is None or pair.head not in initializers:
        return 0
    head, embedding = initializers[pair.head], initializers[pair.embedding]
    if list(head.dims) != list(reversed(embedding.dims)):
        return 0
    if not np.array_equal(_array(head), _array(embedding).T):
        return 0
    removed = _array(head).nbytes
    transposed = _transposed(model, pair.embedding)
    if transposed is None:  # no Transpose of the embedding yet: add one before the head
        transposed = _unique(model, f"{pair.embedding}_transposed")
        node = helper.make_node("Transpose", [pair.embedding], [transposed], name=transposed)
        model.graph.node.insert(list(model.graph.node).index(pair.matmul), node)
    pair.matmul.input[1] = transposed
    if not _readers(model, pair.head):
        model.graph.initializer.remove(head)
    return removed


def _transposed(model, name: str) -> str | None:
    """The output of a plain 2-D ``Transpose(name)`` the graph already computes, if any."""
    for node in model.graph.node:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if node.op_type == "Transpose" and node.input[0] == name and perm == [1, 0]:
            return node.output[0]
    return None


def _unique(model, name: str) -> str:
    taken = {out for node in model.graph.node for out in node.output}
    taken |= {init.name for init in model.graph.initializer}
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def materialise_head(model) -> bool:
    """Give a head that reads ``Transpose(embedding)`` its own ``(H, V)`` initializer.

    MatMulNBits quantizes only MatMuls with a constant ``B``; :func:`share_quantized` removes
    the float copy again after quantization. Returns whether the graph changed.
    """
    from onnx import numpy_helper

    pair = find_pair(model)
    if pair is None or pair.head in _initializers(model):
        return False
    transpose = _producers(model).get(pair.head)
    if (
        transpose is None
        or transpose.op_type != "Transpose"
        or transpose.input[0] != pair.embedding
    ):
        return False
    weight = _array(_initializers(model)[pair.embedding]).T.copy()
    name = f"{pair.embedding}_head"
    model.graph.initializer.append(numpy_helper.from_array(weight, name))
    pair.matmul.input[1] = name
    if not _readers(model, transpose.output[0]):
        model.graph.node.remove(transpose)
    return True


def _readers(model, name: str) -> list:
    return [node for node in model.graph.node if name in node.input]


def _attribute(node, name: str, default=None):
    return next((a.i for a in node.attribute if a.name == name), default)


def share_quantized(model) -> int:
    """Replace a tied embedding's float Gather by GatherBlockQuantized over the LM head's
    MatMulNBits blocks; return the bytes of the float embedding removed (0: nothing shared).

    The head's blocks are shared only when they dequantize to the Gather's own table within
    rounding (one step of each block: ORT's quantizer does not always round to nearest), so an untied head is never mistaken for a tied one.
    Needs ``H`` to be a multiple of the block size (no padded last block).
    """
    from onnx import helper, numpy_helper

    initializers = _initializers(model)
    gather, head = _embedding_gather(model, initializers), _logits_matmul(model)
    if gather is None or head is None or head.op_type != "MatMulNBits" or len(head.input) != 3:
        return 0  # no zero points: symmetric blocks only
    vocab, hidden = (int(d) for d in initializers[gather.input[0]].dims)
    bits, block = _attribute(head, "bits"), _attribute(head, "block_size")
    if (_attribute(head, "N"), _attribute(head, "K")) != (vocab, hidden) or hidden % block:
        return 0
    if not _rounds_to(initializers, head, _array(initializers[gather.input[0]]), bits, block):
        return 0
    shape = numpy_helper.from_array(np.array([vocab, hidden * bits // 8], np.int64), "TiedShape")
    scale_shape = numpy_helper.from_array(np.array([vocab, hidden // block], np.int64), "TiedSS")
    model.graph.initializer.extend([shape, scale_shape])
    nodes = [
        helper.make_node("Reshape", [head.input[1], "TiedShape"], ["TiedPacked"], name="Tied/R"),
        helper.make_node("Reshape", [head.input[2], "TiedSS"], ["TiedScales"], name="Tied/S"),
        helper.make_node(
            "GatherBlockQuantized",
            ["TiedPacked", "input_ids", "TiedScales"],
            list(gather.output),
            name="Tied/GatherBlockQuantized",
            domain=MS_DOMAIN,
            bits=bits,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        ),
    ]
    index = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(index + offset, node)
    removed = initializers[gather.input[0]]
    model.graph.initializer.remove(removed)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return int(np.prod(removed.dims)) * 4


def _rounds_to(initializers: dict, head, table: np.ndarray, bits: int, block: int) -> bool:
    """Whether the symmetric MatMulNBits ``head`` holds ``table`` ``(N, K)``, rounded
    (codes stored low nibble first, zero point ``2**(bits - 1)``)."""
    n, k = _attribute(head, "N"), _attribute(head, "K")
    packed = _array(initializers[head.input[1]]).reshape(n, -1)
    if bits == 4:
        low, high = packed & 0x0F, packed >> 4
        codes = np.stack([low, high], axis=-1).reshape(n, -1)
    else:
        codes = packed
    zero = 2 ** (bits - 1)
    scales = _array(initializers[head.input[2]]).reshape(n, k // block)
    values = (codes[:, :k].astype(np.float32) - zero).reshape(n, k // block, block)
    error = np.abs(values * scales[..., None] - table.reshape(n, k // block, block))
    return bool(np.all(error <= np.abs(scales[..., None]) * (1 + 1e-3) + 1e-7))


def share_in_file(path: Path, external_above: int = 2 * 2**30) -> dict:
    """:func:`share_float` on the graph file ``path``, rewritten only when it changes; the
    bytes on disk before and after (external data included)."""
    import onnx

    folder, name = path.parent, path.name
    before = model_bytes(folder, name)
    model = onnx.load(str(path))
    removed = share_float(model)
    if removed:
        external = before - removed > external_above
        for stale in model_files(folder, name):
            stale.unlink()
        onnx.save(model, str(path), save_as_external_data=external, location=f"{name}_data")
    after = model_bytes(folder, name)
    return {"shared": removed > 0, "bytes_before": before, "bytes_after": after}
