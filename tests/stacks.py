"""Skip markers for the parts of compress one supported library stack cannot install.

The default stack (transformers 4.57, huggingface_hub 0.x) runs everything; the transformers 5.x
stack (``make test`` runs it in .venv-tf5) lacks optimum-onnx, which pins transformers below
4.58, and compressed-tensors 0.14.0.1, below 5 (tests/exporters/test_compressed.py skips on
its own). Each skip says why.
"""

from __future__ import annotations

import pytest
import transformers

from exporters.onnx import optimum_installed

needs_optimum = pytest.mark.skipif(
    not optimum_installed(),
    reason="optimum-onnx 0.1.0 (extra onnx-optimum) needs transformers<4.58; "
    f"this stack has {transformers.__version__}",
)
