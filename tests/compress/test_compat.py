"""compress/compat.py: each difference between the supported library stacks, on this stack."""

from __future__ import annotations

import copy

import pytest

from compress.compat import hub_network_errors, is_hub_network_error, no_split_modules
from compress.selfgen.generate import Recipe, generate_ids


def test_decoder_blocks_are_kept_whole_by_device_maps(tiny_llama):
    assert no_split_modules(tiny_llama) == ["LlamaDecoderLayer"]


def test_self_generation_ignores_the_checkpoints_generation_config(tiny_llama, tokenizer):
    """A checkpoint's sampling settings (generation_config.json) never reach the recipe."""
    recipe, seeds = Recipe(max_len=12), [3, 4]
    plain = generate_ids(tiny_llama, tokenizer, seeds, recipe)
    model = copy.deepcopy(tiny_llama)
    saved = model.generation_config
    saved.repetition_penalty, saved.no_repeat_ngram_size, saved.min_new_tokens = 5.0, 1, 11
    assert generate_ids(model, tokenizer, seeds, recipe) == plain
    assert model.generation_config is saved  # restored


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


def test_without_the_swap_the_checkpoint_settings_would_change_the_text(
    tiny_llama, tokenizer, monkeypatch
):
    """The test above can fail: the settings it plants do change generation when merged."""
    import contextlib

    import compress.selfgen.generate as generate

    recipe, seeds = Recipe(max_len=12), [3, 4]
    plain = generate_ids(tiny_llama, tokenizer, seeds, recipe)
    model = copy.deepcopy(tiny_llama)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.no_repeat_ngram_size = 1
    monkeypatch.setattr(generate, "library_generation_defaults", lambda m: contextlib.nullcontext())
    assert generate_ids(model, tokenizer, seeds, recipe) != plain
