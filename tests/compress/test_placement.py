"""Device maps, CPU/disk offload and sequential onloading prune exactly like a plain CPU run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from compress.core.config import CalibrationConfig, PruneConfig, ReconstructConfig
from compress.core.errors import BadInputError
from compress.engine import Engine
from compress.model.placement import (
    Placement,
    dispatch,
    execution_device,
    load_placed,
    measure_peak,
    onloaded,
    parse_device_map,
    parse_max_memory,
    refuse_quantized,
    resolve_device_map,
    stored_parameters,
)
from tests.tiny_models import DISK_MAP, random_llama, tiny_llama_config

GIB = 2**30


class OnloadingEngine(Engine):
    """The engine with each block's turn wrapped in :func:`onloaded` (the lead's wiring)."""

    def step(self, i, sets):
        window = [i - 1, i] if self.technique.cross_block and i > 0 else [i]
        blocks = [self.adapter.blocks[j] for j in window]
        device = execution_device(blocks[-1], torch.device("cpu"))
        with onloaded(blocks, device), measure_peak(device) as peak:
            entry = super().step(i, sets)
        entry["peak_accelerator_bytes"] = peak.bytes
        return entry


def config(method: str, technique: str = "lr") -> PruneConfig:
    return PruneConfig(
        method=method,
        calibration=CalibrationConfig(nsamples=4, seqlen=16, batch_size=2),
        reconstruct=ReconstructConfig(technique=technique, epochs=1),
    )


def calibration() -> torch.Tensor:
    return torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(0))


def fresh() -> LlamaForCausalLM:
    return random_llama(vocab_size=1000)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    fresh().save_pretrained(folder)
    return folder


def reference(method: str, technique: str) -> dict[str, torch.Tensor]:
    model = fresh()
    Engine(model, config(method, technique)).run(calibration())
    return model.state_dict()


def assert_same_weights(model, want: dict[str, torch.Tensor], tmp_path) -> None:
    """Saved through transformers (which reads offloaded tensors back), then compared."""
    model.save_pretrained(tmp_path / "saved")
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").state_dict()
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


# -- parsing ----------------------------------------------------------------------------------
def test_device_map_presets_json_and_files(tmp_path):
    assert parse_device_map("auto") == "auto" and parse_device_map("sequential") == "sequential"
    mapping = {"model.layers.0": "cpu", "model.layers.1": "disk", "lm_head": 0}
    assert parse_device_map(json.dumps(mapping)) == mapping
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    assert parse_device_map(str(path)) == mapping


@pytest.mark.parametrize(
    "text, match",
    [
        ("everywhere", "use auto, balanced"),
        ("{not json", "not valid JSON"),
        ("[]", "a JSON object such as"),
        ("{}", "non-empty object"),
        ('{"lm_head": "tpu"}', "'tpu' of 'lm_head'"),
        ('{"lm_head": -1}', "-1"),
        ("missing.json", "existing .json file"),
    ],
)
def test_device_map_errors(text, match):
    with pytest.raises(BadInputError, match=match):
        parse_device_map(text)


def test_max_memory_parses_units():
    assert parse_max_memory("0=20GiB, 1=1.5GiB,cpu=64GB,disk=100") == {
        0: 20 * GIB,
        1: int(1.5 * GIB),
        "cpu": 64 * 10**9,
        "disk": 100,
    }


@pytest.mark.parametrize(
    "text, match",
    [
        ("20GiB", "DEVICE=SIZE"),
        ("gpu=20GiB", "DEVICE=SIZE"),
        ("cpu=lots", "size 'lots'"),
        ("cpu=20GiBs", "size '20GiBs'"),
        (" , ", "empty"),
    ],
)
def test_max_memory_errors(text, match):
    with pytest.raises(BadInputError, match=match):
        parse_max_memory(text)


def test_flags_are_checked_together():
    assert Placement.from_flags(None, None, None) is None
    with pytest.raises(BadInputError, match="add --device-map auto"):
        Placement.from_flags(None, "cpu=1GiB", None)
    gpus = torch.cuda.device_count()
    with pytest.raises(BadInputError, match=f"GPU {gpus} is named"):
        Placement.from_flags("auto", f"{gpus}=1GiB", None)


def test_disk_offload_needs_a_folder():
    with pytest.raises(BadInputError, match="--offload-folder"):
        dispatch(fresh(), Placement("auto", {"cpu": 500_000}))
    with pytest.raises(BadInputError, match="no room in memory"):
        dispatch(fresh(), Placement("auto", {"cpu": 1000}, "offload"))


def test_quantized_loading_is_refused_for_pruning():
    with pytest.raises(BadInputError, match="--load-in-4bit cannot be used for pruning"):
        refuse_quantized(load_in_4bit=True)

    class Quantized:
        quantization_config = {"quant_method": "bitsandbytes"}

    with pytest.raises(BadInputError, match="quantized \\(bitsandbytes\\)"):
        refuse_quantized(config=Quantized())
    refuse_quantized(config=tiny_llama_config())


# -- onloading ----------------------------------------------------------------------------------
def test_onloaded_materializes_offloaded_block_and_writes_changes_back(tmp_path):
    model = dispatch(fresh(), Placement(DISK_MAP, offload_folder=str(tmp_path)))
    block, plain = model.model.layers[1], model.model.layers[0].mlp.up_proj.weight
    hook = block.mlp.down_proj._hf_hook
    with onloaded([model.model.layers[0], block], "cpu"):
        assert all(p.device.type == "cpu" for p in block.parameters())
        assert not hook.offload and model.model.layers[0].mlp.up_proj.weight is plain
        with torch.no_grad():
            block.mlp.down_proj.weight[0].zero_()
        weight = block.mlp.down_proj.weight.clone()
    assert hook.offload and block.mlp.down_proj.weight.device.type == "meta"
    assert torch.equal(hook.weights_map["weight"], weight) and weight[0].abs().sum() == 0


@pytest.mark.parametrize("method, technique", [("sparsegpt", "lr"), ("wanda", "br")])
def test_disk_and_cpu_map_prunes_like_plain_cpu(method, technique, tmp_path):
    want = reference(method, technique)
    model = dispatch(fresh(), Placement(DISK_MAP, offload_folder=str(tmp_path / "offload")))
    assert model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    outcome = OnloadingEngine(model, config(method, technique)).run(calibration())
    assert model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert all(block["peak_accelerator_bytes"] is None for block in outcome.blocks)
    assert_same_weights(model, want, tmp_path)


def test_auto_map_with_memory_budget_loads_offloaded_and_prunes_alike(saved, tmp_path):
    want = reference("sparsegpt", "lr")
    placement = Placement("auto", {"cpu": 500_000}, str(tmp_path / "offload"))
    model = load_placed(str(saved), placement, torch.float32)
    assert "disk" in model.hf_device_map.values()
    OnloadingEngine(model, config("sparsegpt")).run(calibration())
    assert_same_weights(model, want, tmp_path)
    original = AutoModelForCausalLM.from_pretrained(saved).state_dict()
    for key, value in fresh().state_dict().items():  # updates went to the offload folder
        assert torch.equal(original[key], value), key


def test_measure_peak_is_none_on_cpu():
    with measure_peak(torch.device("cpu")) as peak:
        torch.ones(4).sum()
    assert peak.bytes is None


def test_stored_parameters_reads_offloaded_weights_back(tmp_path):
    """Offloaded parameters are meta tensors in the model; stored_parameters gives their values
    (once each, tied ones too), so sparsity and NaN checks see the real weights."""
    want = fresh().state_dict()
    model = dispatch(fresh(), Placement(DISK_MAP, offload_folder=str(tmp_path / "offload")))
    assert model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    stored = dict(stored_parameters(model))
    assert sorted(stored) == sorted(name for name, _ in fresh().named_parameters())
    for name, tensor in stored.items():
        assert tensor.device.type == "cpu" and torch.equal(tensor, want[name]), name


def test_a_ram_bound_sets_the_working_set_aside_for_the_whole_process():
    """--max-memory cpu= bounds the process: accelerate gets the bound less the working set
    estimated from the model's shapes; a bound below the working set is one line."""
    from compress.model.placement.maps import block_shape, cpu_budget
    from compress.model.plan import GIB, Workload, working_set_bytes

    model, load = fresh(), Workload(tokens=4 * 16, batch_tokens=2 * 16)
    shape = block_shape(model, torch.float32)
    layer = model.model.layers[0]
    assert shape.bytes == 4 * sum(p.numel() for p in layer.parameters())
    assert shape.largest_layer == layer.mlp.down_proj.weight.numel()
    placement = Placement("auto", {"cpu": 2 * GIB}, workload=load)
    budget = cpu_budget(model, placement, torch.float32)
    assert budget == {"cpu": 2 * GIB - working_set_bytes(shape, load)}
    assert cpu_budget(model, Placement("auto", {"cpu": 2 * GIB}), torch.float32) == {"cpu": 2 * GIB}
    with pytest.raises(BadInputError, match=r"^--max-memory cpu=0\.5 GiB cannot hold even"):
        resolve_device_map(
            model, Placement("auto", {"cpu": GIB // 2}, workload=load), torch.float32
        )
