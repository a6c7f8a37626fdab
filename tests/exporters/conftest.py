"""Pruned tiny models saved as folders, the way ``compress prune`` leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.algorithms.masks import SparsityPattern, measured_sparsity
from compress.algorithms.pruners import PRUNERS
from compress.core.io import write_json_atomic
from compress.core.report import REPORT_FORMAT
from tests.tiny_models import family_configs, random_model


def prunable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``(out, in)`` views of every block Linear (GPT-2 ``Conv1D`` stores ``(in, out)``)."""
    from transformers.pytorch_utils import Conv1D

    views = {}
    for name, module in model.named_modules():
        if ".h." not in name and ".layers." not in name:
            continue  # leave embeddings and the head dense, as compress prune does
        if isinstance(module, torch.nn.Linear):
            views[name] = module.weight.data
        elif isinstance(module, Conv1D):
            views[name] = module.weight.data.t()
    return views


def prune_and_save(model: torch.nn.Module, tokenizer, folder: Path, sparsity: float = 0.5) -> dict:
    """Magnitude-prune every block Linear, save model + tokenizer + report.json; return the report."""
    pattern = SparsityPattern.parse("unstructured")
    layers = {}
    for name, weight in prunable(model).items():
        PRUNERS["magnitude"](weight, name).prune(sparsity, pattern)
        zeros = int((weight == 0).sum())
        layers[name] = {
            "shape": list(weight.shape),
            "target_sparsity": sparsity,
            "sparsity": measured_sparsity(weight),
            "zeros": zeros,
            "numel": weight.numel(),
            "seconds": 0.001,
        }
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = minimal_report(model, layers, sparsity)
    write_json_atomic(folder / "report.json", report)
    return report


def minimal_report(model: torch.nn.Module, layers: dict, sparsity: float) -> dict:
    zeros = sum(v["zeros"] for v in layers.values())
    numel = sum(v["numel"] for v in layers.values())
    params = sum(p.numel() for p in model.parameters())
    return {
        "format": REPORT_FORMAT,
        "model": {
            "source": "tiny-random",
            "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "license": "apache-2.0",
            "model_type": model.config.model_type,
            "parameters": params,
            "dtype": "float32",
        },
        "recipe": {"method": "magnitude", "sparsity": sparsity, "pattern": "unstructured"},
        "calibration": {"sources": []},
        "layers": layers,
        "summary": {
            "method": "magnitude",
            "pattern": "unstructured",
            "target_sparsity": sparsity,
            "sparsity": zeros / numel,
            "model_sparsity": zeros / params,
            "seconds": 0.1,
            "device": "cpu",
        },
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread for torch and ONNX Runtime: on a shared 2-core machine, spinning thread
    pools make tiny models tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_pruned_dir(tmp_path_factory, tokenizer, family: str) -> Path:
    """Two families with different block layouts: Llama (Linear, GQA, RoPE) and GPT-2 (Conv1D,
    learned positions), built once per module because an export takes seconds."""
    model = random_model(family_configs(tokenizer.vocab_size)[family])
    folder = tmp_path_factory.mktemp(f"pruned-{family}")
    prune_and_save(model, tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def pruned_llama_dir(tmp_path_factory, tokenizer) -> Path:
    return make_pruned_dir(tmp_path_factory, tokenizer, "llama")


@pytest.fixture(scope="module")
def pruned_gpt2_dir(tmp_path_factory, tokenizer) -> Path:
    return make_pruned_dir(tmp_path_factory, tokenizer, "gpt2")
