"""Default output folder and Hub repository names explain themselves."""

import pytest

from compress.core.config import PruneConfig, ReconstructConfig


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"model": "meta-llama/Llama-2-7b"}, "Llama-2-7b-wanda-50-br-gp"),
        ({}, "SmolLM2-135M-Instruct-wanda-50-br-gp"),
        (
            {"model": "/models/tiny/", "method": "sparsegpt", "pattern": "2:4"},
            "tiny-sparsegpt-2of4-br-gp",
        ),
        (
            {
                "model": "x/m.gguf",
                "sparsity": 0.7,
                "reconstruct": ReconstructConfig(technique="none"),
            },
            "m-wanda-70",
        ),
    ],
)
def test_default_output_names_the_recipe(settings, name):
    config = PruneConfig(**settings)
    assert config.output == f"out/{name}"
    assert PruneConfig(**settings, push_to_hub=True).hub_repo_id == name


def test_explicit_names_are_kept():
    config = PruneConfig(output="here/mine", push_to_hub=True)
    assert (config.output, config.hub_repo_id) == ("here/mine", "mine")
    assert PruneConfig(push_to_hub=True, hub_repo_id="org/x").hub_repo_id == "org/x"
