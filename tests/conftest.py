"""Shared fixtures: offline tiny random models (built by tests/tiny_models.py) and the embedded
tokenizer."""

from __future__ import annotations

import os

import pytest
import torch

from tests.tiny_models import random_llama

pytest_plugins = ["tests.written_reports"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Tests tokenize hundreds of made-up texts: keep them out of the user's token cache
# (tests/compress/test_token_cache.py turns it on in a temporary folder).
os.environ.setdefault("COMPRESS_TOKEN_CACHE", "0")
# Tests run tiny tensors: threads only add OpenMP start-up cost (and stall on a loaded machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def requires_gpu(func):
    """Skip a test where no CUDA device is visible."""
    return pytest.mark.gpu(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(func)
    )


@pytest.fixture(scope="session")
def embedded_dir():
    """The embedded SmolLM2 model as a cached safetensors folder (converted once)."""
    from compress.model.loading import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def tokenizer(embedded_dir):
    """A real tokenizer (the embedded model's), loaded offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_dir)


@pytest.fixture
def tiny_llama():
    """A 2-block random Llama with the embedded tokenizer's vocabulary, in eval mode."""
    return random_llama()


@pytest.fixture
def tiny_llama_1k():
    """The tiny random Llama with a 1,000-token vocabulary, for cheap second-order tests."""
    return random_llama(vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved 2-block random Llama with the embedded tokenizer (a local model folder)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    random_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
