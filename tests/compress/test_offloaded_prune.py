"""A whole `compress prune` whose weights do not fit the RAM budget (--device-map auto
--max-memory ... --offload-folder): it completes, and its output equals the in-RAM run's."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from compress.cli.main import app
from tests.tiny_models import DISK_MAP


def prune(model_dir, out, *extra: str) -> dict:
    args = ["prune", str(model_dir), "--output", str(out), "--device", "cpu"]
    args += ["--nsamples", "4", "--seqlen", "32", "--reconstruct", "lr", "--seed", "0", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def without_times(layers: dict) -> dict:
    return {
        name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in layers.items()
    }


def weights(folder) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_disk_offloaded_prune_writes_what_the_in_ram_run_writes(tiny_model_dir, tmp_path, method):
    in_ram = prune(tiny_model_dir, tmp_path / "ram", "--method", method)
    offloaded = prune(
        tiny_model_dir,
        tmp_path / "disk",
        "--method",
        method,
        "--device-map",
        json.dumps(DISK_MAP),
        "--offload-folder",
        str(tmp_path / "offload"),
    )
    want, got = weights(tmp_path / "ram"), weights(tmp_path / "disk")
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    assert without_times(offloaded["layers"]) == without_times(in_ram["layers"])
    for key in ("sparsity", "model_sparsity", "target_sparsity"):
        assert offloaded["summary"][key] == in_ram["summary"][key], key
    assert offloaded["summary"]["device"] == "cpu"
    assert (tmp_path / "disk" / "README.md").is_file()
