"""compress/compat.py: each difference between the supported library stacks, on this stack."""

from __future__ import annotations

import pytest

from compress.compat import hub_network_errors, is_hub_network_error, no_split_modules


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
