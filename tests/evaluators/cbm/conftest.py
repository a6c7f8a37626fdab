"""Fixtures for the CBM tests: one thread (the tiny ops here lose to OpenMP start-up on a loaded
2-core machine), a tiny synthetic dataset, and a tiny trained model folder."""

from __future__ import annotations

import pytest
import torch

TINY = {
    "n_concepts": 12,
    "n_classes": 8,
    "n_similar": 4,
    "samples_per_class": 30,
    "input_dim": 16,
    "z_std": 1.0,
    "concept_groups": 4,
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_options():
    """Generator knobs of a tiny synthetic dataset (12 concepts, 8 classes, 240 samples)."""
    return dict(TINY)


@pytest.fixture
def tiny_data():
    from evaluators.cbm.data import DataSpec, load_dataset

    return load_dataset(DataSpec("synthetic", seed=0, options=dict(TINY)))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny IND model trained and saved once for the whole session."""
    from evaluators.cbm.data import DataSpec
    from evaluators.cbm.models import Variant
    from evaluators.cbm.training import TrainConfig
    from evaluators.cbm.workflows import train_to_folder

    folder = tmp_path_factory.mktemp("cbm") / "ind"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = DataSpec("synthetic", seed=0, options=dict(TINY))
    train_to_folder(folder, spec, Variant.IND, TrainConfig(epochs=150, lr=0.01), [32], [])
    torch.set_num_threads(threads)
    return folder
