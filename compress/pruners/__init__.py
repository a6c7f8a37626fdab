"""Pruners: one module per method, registered by name in :data:`PRUNERS`."""

from compress.pruners import magnitude, sparsegpt, wanda  # noqa: F401  (fill the registry)
from compress.pruners.base import PRUNERS, Pruner, PruneResult, register

__all__ = ["PRUNERS", "PruneResult", "Pruner", "register"]
