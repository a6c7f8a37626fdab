"""Training variants, determinism, pruning the concept predictor, SAM fine-tuning."""

from __future__ import annotations

import pytest
import torch

from compress.algorithms.masks import SparsityPattern
from compress.core.errors import BadInputError
from evaluators.cbm.models import CBMConfig, Variant, build_cbm
from evaluators.cbm.prune import prune_linears
from evaluators.cbm.training import TrainConfig, evaluate, finetune_sam, train_cbm


def tiny_model(data, variant):
    return build_cbm(CBMConfig(data.input_dim, data.n_concepts, data.n_classes, variant, [16]))


@pytest.mark.parametrize("variant", list(Variant))
def test_each_variant_trains(tiny_data, variant):
    model = tiny_model(tiny_data, variant)
    result = train_cbm(model, tiny_data, variant, TrainConfig(epochs=30, lr=0.01))
    losses = next(iter(result["history"].values()))
    assert losses[-1] < losses[0]
    assert model.bottleneck == ("logit" if variant is Variant.JNT else "sigmoid")
    assert set(result["history"]) == (
        {"joint"} if variant in (Variant.JNT, Variant.JNTP) else {"concept", "task"}
    )


def test_ind_label_predictor_reads_true_concepts(tiny_data):
    model = tiny_model(tiny_data, Variant.IND)
    train_cbm(model, tiny_data, Variant.IND, TrainConfig(epochs=150, lr=0.01))
    with torch.no_grad():
        oracle = (model.f(tiny_data.test.c).argmax(1) != tiny_data.test.y).float().mean()
    assert oracle <= 0.1  # concepts determine the class on this data


def test_training_is_deterministic(tiny_data):
    weights = []
    for _ in range(2):
        model = tiny_model(tiny_data, Variant.SEQ)
        train_cbm(model, tiny_data, Variant.SEQ, TrainConfig(epochs=3, seed=5))
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(*weights)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_concept_predictor(tiny_data, method):
    model = tiny_model(tiny_data, Variant.IND)
    f_before = model.f[0].weight.clone()
    layers, masks = prune_linears(model.g, tiny_data.train.x, method, 0.5, SparsityPattern())
    assert list(layers) == ["0", "2"]
    for linear in (model.g[0], model.g[2]):
        assert (linear.weight == 0).float().mean().item() == pytest.approx(0.5)
        assert torch.equal(masks[linear.weight], linear.weight != 0)
    assert torch.equal(model.f[0].weight, f_before)  # f stays dense


def test_prune_2_4_and_bad_inputs(tiny_data):
    model = tiny_model(tiny_data, Variant.IND)
    prune_linears(model.g, tiny_data.train.x, "wanda", 0.5, SparsityPattern.parse("2:4"))
    groups = (model.g[0].weight != 0).reshape(16, -1, 4).sum(dim=2)
    assert (groups <= 2).all()
    with pytest.raises(BadInputError, match="method"):
        prune_linears(model.g, tiny_data.train.x, "random", 0.5, SparsityPattern())
    with pytest.raises(BadInputError, match="sparsity"):
        prune_linears(model.g, tiny_data.train.x, "wanda", 1.5, SparsityPattern())


def test_sam_finetuning_keeps_pruned_weights_zero(tiny_data):
    model = tiny_model(tiny_data, Variant.IND)
    train_cbm(model, tiny_data, Variant.IND, TrainConfig(epochs=5, lr=0.01))
    _, masks = prune_linears(model.g, tiny_data.train.x, "magnitude", 0.9, SparsityPattern())
    pruned_error = evaluate(model, tiny_data.train)["concept_error"]
    losses = finetune_sam(model, tiny_data, Variant.IND, masks, TrainConfig(epochs=10, lr=0.01))
    for weight, mask in masks.items():
        assert (weight[~mask] == 0).all()
        assert weight[mask].ne(0).any()
    assert losses[-1] < losses[0]
    assert evaluate(model, tiny_data.train)["concept_error"] <= pruned_error


def test_trained_folder_records_every_synthetic_knob(tmp_path, tiny_options):
    import json

    from evaluators.cbm.data import DataSpec
    from evaluators.cbm.store import load_cbm
    from evaluators.cbm.workflows import train_to_folder

    options = {k: v for k, v in tiny_options.items() if k != "z_std"}  # noise left at default
    folder = tmp_path / "m"
    train_to_folder(folder, DataSpec("synthetic", options=options), Variant.IND,
                    TrainConfig(epochs=1), [8], [])  # fmt: skip
    meta = json.loads((folder / "cbm.json").read_text())
    assert meta["data"]["options"]["z_std"] == 1.0 and meta["data"]["options"]["wx_std"] == 0.1
    # a folder saved before the knobs were recorded was generated with the old default
    del meta["data"]["options"]["z_std"]
    (folder / "cbm.json").write_text(json.dumps(meta))
    assert load_cbm(folder)[2].options["z_std"] == 2.0
