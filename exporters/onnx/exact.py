"""MatMulNBits holding a quantized folder's own integers and scales, not a second rounding.

A folder written with ``--quantize`` keeps the dequantized weights and, in
``quantization.safetensors``, each quantized weight's float16 scales on a symmetric grid
(:mod:`compress.algorithms.quant.record`). Its integers ``q`` come back exactly
(:func:`~compress.algorithms.quant.record.integers`) and are stored the way onnxruntime's
``com.microsoft.MatMulNBits`` reads them (its contrib-op doc; ``MatMulNBitsQuantizer`` packs the
same way): ``B`` uint8 ``[N, n_blocks, blob]``, ``blob = block_size * bits / 8``, the codes of
one output row along ``K``, low nibble first for 4 bits; ``scales`` ``[N * n_blocks]`` in the
graph's float type; no ``zero_points`` input, so the implied zero point ``2^(bits-1)`` (8, 128)
makes ``code - zero_point`` our ``q``. ``block_size`` is the record's group size.

Only the decoder blocks' Linear layers are in a record; the embedding and the LM head stay
float, as the evaluated model had them. The graph computes in float32
(``accuracy_level`` 1): no activation rounding the evaluated model did not do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compress.core.errors import BadInputError

MS_DOMAIN = "com.microsoft"
ACCURACY_LEVEL = 1  # float32 compute: the activations are not rounded to int8
# the --quantize each grid is written with (int8: weight-only, as the record is)
QUANTIZE_OF_BITS = {4: "int4", 8: "int8-weights"}


def record_method(bits: int, group_size: int) -> str:
    """The ArtifactRecord's ``method`` of an export from a record."""
    return (
        f"int{bits} (exact: the model's grid): MatMulNBits holding the folder's integers and "
        f"float16 scales, blocks of {group_size}; embedding and LM head float32 (not in the record)"
    )


def check_record(grid, quantize: str | None, folder: Path) -> None:
    """Refuse, in one line, a ``--quantize`` a folder quantized on ``grid`` cannot be written
    with exactly: another bit width, ORT's dynamic int8, or a group size MatMulNBits lacks.

    Raises:
        BadInputError: what was asked, what the folder holds and what to do.
    """
    if quantize is None:
        return
    wanted = QUANTIZE_OF_BITS[grid.bits]
    if quantize != wanted:
        raise BadInputError(
            f"{folder} holds {grid.name} weights on its recorded grid; --quantize {quantize} "
            f"would round them again: use --quantize {wanted} (the folder's integers), or none"
        )
    g = grid.group_size
    if g < 16 or g & (g - 1):
        what = "one scale per output row" if g == 0 else f"a group size of {g}"
        raise BadInputError(
            f"{folder} is quantized with {what}; MatMulNBits needs a power of two >= 16: "
            f"quantize the folder again with --group-size 32 (or 16, 64, 128)"
        )


def checkpoint_bytes(folder: Path, record) -> int:
    """Bytes of the folder's weights as an exact build reads them: the recorded ones packed at
    the record's bits, the others in float32 (what :mod:`exporters.onnx.fit` plans with)."""
    from safetensors import safe_open

    from compress.algorithms.quant.record import RECORD

    total = 0
    for path in Path(folder).glob("*.safetensors"):
        if path.name == RECORD:
            continue
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                numel = int(np.prod(f.get_slice(name).get_shape()))
                total += numel * record.grid.bits // 8 if name in record.scales else numel * 4
    return total


def pack(q: torch.Tensor, bits: int, block_size: int) -> np.ndarray:
    """MatMulNBits' ``B`` ``[N, K / block_size, blob]`` uint8 from integers ``q`` ``(N, K)``
    (``nn.Linear``'s orientation) in ``[-2^(bits-1), 2^(bits-1))``."""
    n, k = q.shape
    codes = (q.to(torch.int16) + 2 ** (bits - 1)).to(torch.uint8).numpy()
    if bits == 4:
        codes = codes[:, 0::2] | (codes[:, 1::2] << 4)  # low nibble first
    return np.ascontiguousarray(codes.reshape(n, k // block_size, block_size * bits // 8))


def unpack(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The integers ``(N, K)`` int8 a MatMulNBits ``B`` holds, with the implied zero point."""
    n = packed.shape[0]
    flat = packed.reshape(n, -1)
    if bits == 4:
        flat = np.stack([flat & 0x0F, flat >> 4], axis=-1).reshape(n, -1)
    return (flat[:, :k].astype(np.int16) - 2 ** (bits - 1)).astype(np.int8)


def weight_name(node_name: str) -> str:
    """The folder's weight an exported projection's MatMul computes with:
    ``/model/layers.0/self_attn/q_proj/MatMul`` -> ``model.layers.0.self_attn.q_proj.weight``."""
    return node_name.strip("/").rsplit("/", 1)[0].replace("/", ".") + ".weight"


def rewrite(model, folder: Path, record) -> int:
    """Replace, in ``model`` (an fp32 ``onnx.ModelProto`` of ``folder``, edited in place), each
    MatMul computing with a recorded weight by a MatMulNBits of that weight's integers and
    scales; return how many. The graph's ``B`` must equal the folder's weight bit for bit.

    Raises:
        BadInputError: a recorded weight is off its grid (from
            :func:`~compress.algorithms.quant.record.integers`).
        RuntimeError: a recorded weight has no such MatMul in the graph (nothing is half
            written: the caller saves nothing).
    """
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    weights = _FolderWeights(folder)
    done: set[str] = set()
    nodes = list(model.graph.node)
    for node in nodes:
        name = weight_name(node.name) if node.op_type == "MatMul" else None
        if name not in record.scales or node.input[1] not in initializers:
            continue
        weight = weights.get(name)
        b = numpy_helper.to_array(initializers[node.input[1]])
        if b.shape != (weight.shape[1], weight.shape[0]) or not np.array_equal(
            b, weight.float().T.numpy()
        ):
            raise RuntimeError(
                f"{node.name} does not compute with {name}: the graph is not {folder}'s"
            )
        new = _nbits_node(model, node, name, weight, record, b.dtype)
        model.graph.node.insert(list(model.graph.node).index(node), new)
        model.graph.node.remove(node)
        done.add(name)
    missing = sorted(set(record.scales) - done)
    if missing:
        raise RuntimeError(
            f"{len(missing)} recorded weights have no MatMul in the graph: {missing[0]}, ..."
        )
    _drop_unread(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(done)


def _nbits_node(model, node, name: str, weight: torch.Tensor, record, float_type):
    from onnx import helper, numpy_helper

    from compress.algorithms.quant.record import integers

    grid, scales = record.grid, record.scales[name]
    q = integers(weight, scales, grid, name)
    n, k = q.shape
    prefix = node.input[1]
    packed = numpy_helper.from_array(pack(q, grid.bits, grid.group_size), f"{prefix}_Q{grid.bits}")
    flat = scales.float().numpy().astype(float_type).reshape(-1)
    model.graph.initializer.extend([packed, numpy_helper.from_array(flat, f"{prefix}_scales")])
    return helper.make_node(
        "MatMulNBits",
        [node.input[0], packed.name, f"{prefix}_scales"],
        list(node.output),
        name=f"{node.name}NBits",
        domain=MS_DOMAIN,
        K=k,
        N=n,
        bits=grid.bits,
        block_size=grid.group_size,
        accuracy_level=ACCURACY_LEVEL,
    )


def _drop_unread(model) -> None:
    """Remove the float initializers no node reads any more."""
    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    for init in list(model.graph.initializer):
        if init.name not in read:
            model.graph.initializer.remove(init)


class _FolderWeights:
    """The folder's tensors by name, read one at a time from its safetensors files."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.where: dict[str, Path] = {}
        for path in sorted(Path(folder).glob("*.safetensors")):
            if path.name == "quantization.safetensors":
                continue
            with safe_open(str(path), framework="pt") as f:
                self.where.update(dict.fromkeys(f.keys(), path))

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt") as f:
            return f.get_tensor(name)


def nbits_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    """Each MatMulNBits of ``model`` by node name: its integers ``(N, K)``, its scales
    ``(N, n_blocks)`` float32, bits and block size (no zero points: symmetric graphs only)."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        packed = numpy_helper.to_array(initializers[node.input[1]])
        q = unpack(packed, attrs["bits"], attrs["K"])
        scales = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
        zero = _zero_points(node, initializers, attrs)
        found[node.name] = (
            q - zero,
            scales.reshape(attrs["N"], -1),
            attrs["bits"],
            attrs["block_size"],
        )
    return found


def _zero_points(node, initializers, attrs) -> np.ndarray | int:
    """What a node's explicit zero points differ from the implied one (0 when it has none)."""
    from onnx import numpy_helper

    if len(node.input) < 4 or not node.input[3]:
        return 0
    bits, n, k, block = attrs["bits"], attrs["N"], attrs["K"], attrs["block_size"]
    blocks = -(-k // block)
    zp = numpy_helper.to_array(initializers[node.input[3]]).reshape(n, -1)
    if bits == 4:
        zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)
    zp = zp[:, :blocks].astype(np.int16) - 2 ** (bits - 1)
    return np.repeat(zp, block, axis=1)[:, :k]


def write_graph(staging: Path, folder: Path, record, tag: str) -> Path:
    """``staging``'s fp32 ``model.onnx`` rewritten by :func:`rewrite` into its ``tag``
    (int4 or int8) graph file; returns its path."""
    import onnx

    from exporters.onnx.files import MODEL_FILE, model_bytes, quantized_file
    from exporters.onnx.quantize import TWO_GIB

    target = Path(staging) / quantized_file(tag)
    model = onnx.load(str(Path(staging) / MODEL_FILE))
    rewrite(model, folder, record)
    external = model_bytes(staging) > TWO_GIB
    onnx.save(model, str(target), save_as_external_data=external, location=f"{target.name}_data")
    return target
