"""Pruners: one module per method, registered by name in :data:`PRUNERS`."""

from compress.algorithms.pruners import keep, magnitude, sparsegpt, wanda  # noqa: F401  (fill the registry)
from compress.algorithms.pruners.base import PRUNERS, Pruner, PruneResult, register

__all__ = ["PRUNERS", "PruneResult", "Pruner", "register"]
