"""Where the weights live: accelerate device maps, offload, sequential onloading, peak memory.

Four jobs, one idea (placing a model that may not fit one device):

- ``--device-map {auto,balanced,balanced_low_0,sequential,JSON}`` and ``--max-memory
  "0=20GiB,1=20GiB,cpu=64GiB"`` are parsed into a :class:`Placement`; the device map is resolved
  on an empty (meta) copy of the model with accelerate, so a map that needs disk offload without
  ``--offload-folder`` fails before any weight is read, then the model is loaded (or an
  in-memory model dispatched) with that explicit map.
- :func:`onloaded` moves one block (or a window of blocks) to the accelerator for its turn and
  back afterwards. Blocks that accelerate offloaded (parameters on ``meta``, values in the
  hook's ``weights_map`` on CPU or disk) are materialized, their hooks told to run on the
  accelerator without offloading, and the updated (pruned, reconstructed) values are written
  back to the CPU map or the disk files when the block's turn ends.
- :func:`measure_peak` records ``torch.cuda.max_memory_allocated`` for one block's turn.
- :func:`save_model` writes the model in one read of its weights, counting zeros and refusing
  NaN/Inf on the way; an offloaded model is streamed into its files one tensor at a time.

With a workload (:class:`compress.model.plan.Workload`), ``--max-memory cpu=`` bounds the whole
process: the run's working set is set aside before accelerate places weights in RAM.

Pruning needs the dense weights, so 8-/4-bit loading is refused (:func:`refuse_quantized`).
"""

from compress.model.placement.maps import (
    DeviceMap,
    Placement,
    dispatch,
    load_placed,
    parse_device_map,
    parse_max_memory,
    parse_size,
    refuse_quantized,
    resolve_device_map,
)
from compress.model.placement.memory import (
    PeakMemory,
    measure_peak,
    peak_rss_bytes,
    release_free_memory,
)
from compress.model.placement.onload import (
    execution_device,
    holds_offloaded,
    offload_stores,
    onloaded,
    stored_parameters,
)
from compress.model.placement.save import WeightTally, save_model

__all__ = [
    "DeviceMap",
    "PeakMemory",
    "Placement",
    "dispatch",
    "execution_device",
    "holds_offloaded",
    "load_placed",
    "measure_peak",
    "offload_stores",
    "onloaded",
    "parse_device_map",
    "parse_max_memory",
    "parse_size",
    "peak_rss_bytes",
    "refuse_quantized",
    "stored_parameters",
    "release_free_memory",
    "resolve_device_map",
    "save_model",
    "WeightTally",
]
