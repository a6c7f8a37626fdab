"""Every export format, registered by name in :data:`EXPORTERS` (``compress export NAME``).

A new format is one module with an :class:`~exporters.base.Exporter` subclass decorated with
:func:`~exporters.base.register`, and its import here.
"""

from exporters import bnb, compressed, gguf, onnx  # noqa: F401  (fill the registry)
from exporters.base import EXPORTERS, Exporter, exporter_of, register, run_export

__all__ = ["EXPORTERS", "Exporter", "exporter_of", "register", "run_export"]
