"""Which weights of an onnxruntime-genai int4 build get 8 bits: the model builder's quant
config (``--target_options``) and a check of the graph it wrote.

The builder names its MatMuls after the Hugging Face projections (``/model/layers.3/attn/
qkv_proj/MatMul``, q/k/v fused where it can) and silently ignores a name it does not have, so
the built graph is counted afterwards. No torch here: the export options import it for ``--help``.
"""

from __future__ import annotations

from pathlib import Path

from compress.core.errors import BadInputError

ATTENTION = ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj")  # the builder's node names
MLP = ("gate_proj", "up_proj", "down_proj")
LM_HEAD = "lm_head"
PROJECTIONS = (*ATTENTION, *MLP, LM_HEAD)
# the builder's legacy compound algorithms: a base method plus 8-bit presets
COMPOUND = {"k_quant_mixed": ("k_quant", ("last_matmul", "mixed_layers"))}


def _section(projection: str) -> str:
    """The builder's sub-graph of a block projection: ``attn`` or ``mlp``."""
    return "attn" if projection in ATTENTION else "mlp"


def int4_quant_config(algorithm: str, block_size: int, int8: tuple[str, ...], layers: int) -> dict:
    """The model builder's ``--target_options``: 4-bit ``MatMulNBits`` by ``algorithm``, and 8
    bits for the projections named in ``int8`` in each of the ``layers`` blocks (``lm_head``:
    the LM head, and with it the tied embedding's ``GatherBlockQuantized``)."""
    method, presets = COMPOUND.get(algorithm, (algorithm, ()))
    overrides: list[dict] = [
        {"match": {"name": f"/model/layers.{i}/{_section(name)}/{name}/MatMul"}, "type": "int8"}
        for i in range(layers)
        for name in int8
        if name != LM_HEAD
    ]
    if LM_HEAD in int8 and "last_matmul" not in presets:
        presets = ("last_matmul", *presets)
    overrides += [{"match": {"preset": preset}, "type": "int8"} for preset in presets]
    weights = {
        "type": "int4",
        "method": method,
        "block_size": block_size,
        "op_types": ["MatMul", "Gather"],  # Gather: the embedding, tied to the LM head's blocks
        "overrides": overrides,
    }
    return {"quant_config": {"weights": weights}}


def eight_bit_nodes(output: Path) -> dict[str, int]:
    """How many 8-bit ``MatMulNBits`` the built graph holds, per projection name."""
    import onnx

    graph = onnx.load(str(output / "model.onnx"), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        bits = [a.i for a in node.attribute if a.name == "bits"]
        if node.op_type == "MatMulNBits" and bits == [8]:
            parts = node.name.strip("/").split("/")  # /model/layers.3/attn/qkv_proj/MatMul_Q8
            name = parts[-2] if len(parts) > 1 else parts[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def check_eight_bit(output: Path, int8: tuple[str, ...], layers: int) -> dict[str, int]:
    """The 8-bit counts of :func:`eight_bit_nodes`, after checking every projection asked for
    got them (the builder ignores a name it does not have).

    Raises:
        BadInputError: a projection of ``int8`` is not 8-bit in every block.
    """
    counts = eight_bit_nodes(output)
    for name in int8:
        expected = 1 if name == LM_HEAD else layers
        if counts.get(name, 0) < expected:
            raise BadInputError(
                f"--genai-int8 {name}: the builder's graph has {counts.get(name, 0)} such 8-bit "
                f"MatMuls, not {expected} (its names for this model: see model.onnx); "
                f"choose from {', '.join(PROJECTIONS)} or none"
            )
    return counts
