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


def test_a_nan_in_an_offloaded_weight_is_refused_and_nothing_is_written(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The single pass that writes the weights meets the NaN in block 1's offloaded weight:
    one line naming it, no output folder, no staging folder left."""
    import compress.app.prune as prune_app
    from compress.model.placement import offload_stores

    run_engine = prune_app.run_engine
    name = "model.layers.1.mlp.up_proj.weight"

    def poisoning(loaded, *args):
        outcome = run_engine(loaded, *args)
        weights_map, key = offload_stores(loaded.model)[name]
        poisoned = weights_map[key].clone()
        poisoned[3, 3] = float("nan")
        weights_map.dataset.state_dict[weights_map.prefix + key] = poisoned
        return outcome

    monkeypatch.setattr(prune_app, "run_engine", poisoning)
    out = tmp_path / "disk"
    args = ["prune", str(tiny_model_dir), "--output", str(out), "--device", "cpu", "--no-eval"]
    args += ["--nsamples", "4", "--seqlen", "32", "--device-map", json.dumps(DISK_MAP)]
    result = CliRunner().invoke(app, [*args, "--offload-folder", str(tmp_path / "offload")])
    assert result.exit_code == 2, result.output
    assert f"{name} holds 1 NaN or Inf value" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
