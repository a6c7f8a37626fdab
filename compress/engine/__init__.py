"""The sequential pruning engine: per-block steps (:mod:`.steps`), the activation streams
(:mod:`.activations`) and the work folder of checkpoints (:mod:`.workfolder`)."""

from compress.engine.activations import ActivationStore, Stream, Streams, activation_device
from compress.engine.steps import Engine, PruneOutcome, prune_model
from compress.engine.workfolder import SELFGEN, WorkFolder

__all__ = [
    "SELFGEN",
    "ActivationStore",
    "Engine",
    "PruneOutcome",
    "Stream",
    "Streams",
    "WorkFolder",
    "activation_device",
    "prune_model",
]
