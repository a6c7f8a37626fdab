"""compress/model/compat.py: each difference between the supported library stacks, on this stack."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from compress.model.compat import hub_network_errors, is_hub_network_error, no_split_modules
from tests.stacks import legacy

pytestmark = legacy  # each stack's side of each difference: both stacks


def test_decoder_blocks_are_kept_whole_by_device_maps(tiny_llama):
    assert no_split_modules(tiny_llama) == ["LlamaDecoderLayer"]


@pytest.mark.parametrize(
    ("error", "network"),
    [
        (RuntimeError("Cannot send a request, as the client has been closed."), True),
        (RuntimeError("Error while uploading 'model.safetensors' to the Hub."), False),
        (ValueError("bad header"), False),
    ],
)
def test_hub_network_errors(error, network):
    assert is_hub_network_error(error) is network


def test_the_installed_http_clients_errors_count():
    assert hub_network_errors()
    assert all(is_hub_network_error(kind("connection refused")) for kind in hub_network_errors())


def test_loading_a_model_does_not_import_sklearn_or_scipy():
    """transformers 4.x imported scikit-learn, scipy and pandas with its model classes
    (a second or more of every prune's start-up); loading the embedded model imports none of
    them on 4.x (5.x still imports scipy with its losses)."""
    code = (
        "import sys; from compress.model.loading import load_model; load_model(None, 'cpu', 'float32');"
        "print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    skipped = ["pandas", "scipy", "sklearn"]
    if not hasattr(importlib.import_module("transformers.utils.import_utils"), "_scipy_available"):
        skipped = ["sklearn"]  # transformers 5: scipy's flag is a function, left alone
    assert not set(skipped) & set(ast.literal_eval(done.stdout.strip()))
