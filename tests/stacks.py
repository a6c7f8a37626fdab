"""Markers for the parts of compress that only the legacy library stack installs.

The default stack (transformers 5, huggingface_hub >= 1.0, ``make test``'s .venv) runs every
test; what needs optimum-onnx (it pins transformers below 4.58) or compressed-tensors 0.14.0.1
(the last release with sparse compressors; transformers >= 5.10 requires 0.15) skips there with
its reason. Those tests carry the ``legacy`` marker, as do the checks of what transformers 4.57
reads differently: ``make test-legacy`` runs the marked tests of the Makefile's LEGACY_TESTS
files in .venv-legacy (transformers 4.57).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import transformers

from compress.core.errors import BadInputError
from exporters.compressed import require_sparse_compressors
from exporters.onnx import optimum_installed

legacy = pytest.mark.legacy


def has_sparse_compressors() -> bool:
    """Whether this stack writes the sparse compressed-tensors formats."""
    try:
        require_sparse_compressors()
    except BadInputError:
        return False
    return True


def _legacy_only(available: bool, reason: str) -> Callable:
    """Mark a test ``legacy`` and skip it, with ``reason``, where ``available`` is false."""

    def mark(func: Callable) -> Callable:
        return legacy(pytest.mark.skipif(not available, reason=reason)(func))

    return mark


needs_optimum = _legacy_only(
    optimum_installed(),
    "optimum-onnx 0.1.0 (legacy extra legacy-onnx) needs transformers<4.58; "
    f"this stack has {transformers.__version__}",
)
needs_sparse_compressors = _legacy_only(
    has_sparse_compressors(),
    "needs compressed-tensors 0.14.0.1 (legacy extra legacy-sparse; 0.15+ dropped its sparse "
    f"compressors), which needs transformers<5; this stack has {transformers.__version__}",
)
