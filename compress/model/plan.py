"""Before the long work: does the model fit, in which dtype, and is there disk for it?

Pure arithmetic over sizes the caller measured (file sizes, free RAM/accelerator memory, free
disk), so every decision is testable with made-up numbers. The caller turns ``Plan.onload`` into
the sequential onloading that exists (weights wait on CPU/disk, each block is onloaded for its
turn).
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.errors import BadInputError

GIB = 1024**3
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
HEADROOM = 1.25  # weights x this: activations, statistics, a block's dense copy
ONLOAD_BLOCKS = 3  # onloading holds about this many blocks at once (+ embeddings)
ONLOAD_FLAGS = "--device-map auto --offload-folder DIR"


RUNTIME_BYTES = 3 * GIB // 4  # the interpreter, torch, transformers, the tokenizer, text


@dataclass(frozen=True)
class Workload:
    """What a pruning run holds in RAM beside the weights accelerate places there."""

    tokens: int  # calibration tokens, all sequences (the activation streams)
    batch_tokens: int  # tokens one forward runs on
    gram_bytes: int = 0  # the pruner's statistics per squared input column (0: a vector)


@dataclass(frozen=True)
class BlockShape:
    """The largest decoder block, read from the (empty) model."""

    bytes: int  # its weights
    largest_layer: int  # elements of its largest weight matrix
    columns_squared: int  # sum over its weight matrices of input columns squared
    hidden: int
    inner: int  # the MLP's width


@dataclass(frozen=True)
class Plan:
    dtype: str  # a concrete dtype name
    onload: bool  # weights wait on CPU/disk; each block is onloaded for its turn
    weights_bytes: int  # the weights in ``dtype``


@dataclass(frozen=True)
class DiskNeed:
    what: str  # "download", "conversion", "output", "offload"
    bytes: int
    folder: str
    free: int  # free bytes on that folder's filesystem
    filesystem: int  # st_dev: needs on one filesystem add up


def gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB"


def plan_memory(
    parameters: int, blocks: int, dtype: str, accelerator: bool, memory: int, ram: int
) -> Plan:
    """The dtype and placement for ``parameters`` weights in ``blocks`` blocks.

    ``dtype``: ``auto`` or a name in :data:`ITEMSIZE`. ``memory``: free bytes where the model
    runs (RAM on a CPU, the GPU's free memory with ``accelerator``); ``ram``: free RAM. ``auto``
    is bfloat16 on an accelerator; on a CPU float32 when it fits, else bfloat16. When the weights
    do not fit, onloading needs a few blocks to fit where the model runs.

    Raises:
        BadInputError: not even onloading fits; the line gives the numbers and the flags.
    """
    choices = (
        [dtype] if dtype != "auto" else (["bfloat16"] if accelerator else ["float32", "bfloat16"])
    )
    for name in choices:
        if _need(parameters, name) <= memory:
            return Plan(name, False, parameters * ITEMSIZE[name])
    smallest = choices[-1]
    per_block = _need(parameters, smallest) / max(blocks, 1)
    if ONLOAD_BLOCKS * per_block <= min(memory, ram):
        return Plan(smallest, True, parameters * ITEMSIZE[smallest])
    where = "GPU memory" if accelerator else "RAM"
    helps = [] if smallest != "float32" else ["--dtype bfloat16"]
    helps += ["a machine with more memory" if accelerator else "--device cuda"]
    raise BadInputError(
        f"the model needs {gib(_need(parameters, smallest))} of {where} in {smallest} "
        f"({gib(ONLOAD_BLOCKS * per_block)} when onloading block by block); "
        f"{gib(min(memory, ram))} is available; try {' or '.join(helps)}"
    )


def _need(parameters: int, dtype: str) -> float:
    return parameters * ITEMSIZE[dtype] * HEADROOM


def check_disk(needs: list[DiskNeed]) -> None:
    """Every filesystem has room for what goes on it.

    Raises:
        BadInputError: one line naming what needs the room, how much, and how much is free.
    """
    by_fs: dict[int, list[DiskNeed]] = {}
    for need in needs:
        by_fs.setdefault(need.filesystem, []).append(need)
    for group in by_fs.values():
        total = sum(n.bytes for n in group)
        if total > group[0].free:
            parts = " and ".join(f"the {n.what} ({gib(n.bytes)}, {n.folder})" for n in group)
            raise BadInputError(
                f"not enough disk: {parts} need {gib(total)}, {gib(group[0].free)} is free there; "
                "free space, or point HF_HOME / COMPRESS_CACHE / --output at a bigger disk"
            )


def working_set_bytes(block: BlockShape, workload: Workload) -> int:
    """RAM a run holds beside the weights placed there: the runtime; a block onloaded for its
    turn and its written-back copy; one layer's pruning (float32 scores, top-k values and int64
    indices of half of each row, masks: 16 bytes an element); the statistics; the activation
    streams (sparse and dense, float32) and one batch's forward (the MLP's and a few hidden-wide
    float32 tensors)."""
    activations = 8 * workload.tokens * block.hidden
    forward = 4 * workload.batch_tokens * (3 * block.inner + 8 * block.hidden)
    statistics = workload.gram_bytes * block.columns_squared
    return (
        RUNTIME_BYTES
        + 2 * block.bytes
        + 16 * block.largest_layer
        + statistics
        + activations
        + forward
    )


def weights_budget(bound: int, working: int) -> int:
    """What of a RAM bound (``--max-memory cpu=``) is left for the weights accelerate places in
    RAM once the run's working set is set aside, so the whole process stays within the bound.

    Raises:
        BadInputError: the bound cannot hold even the working set.
    """
    if bound <= working:
        raise BadInputError(
            f"--max-memory cpu={gib(bound)} cannot hold even the run's working set ({gib(working)}: "
            "the runtime, one block onloaded and pruned, the calibration activations); "
            f"raise it above {gib(working)}, or lower --nsamples/--batch-size"
        )
    return bound - working
