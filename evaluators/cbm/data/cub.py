"""CUB-200-2011 from a user-supplied folder, processed as in Koh et al. (ICML 2020).

Expected layout (the official archive)::

    CUB_200_2011/
        images.txt                  "<image_id> <relative path>"
        image_class_labels.txt      "<image_id> <class_id>"
        train_test_split.txt        "<image_id> <1 = train, 0 = test>"
        classes.txt                 "<class_id> <name>"
        attributes/image_attribute_labels.txt
                                    "<image_id> <attribute_id> <is_present> <certainty> <time>"
        attributes/attributes.txt   "<attribute_id> <group>::<value>" (or beside CUB_200_2011/)
        images/<class folder>/<file>.jpg
        features.pt                 optional: float tensor (n_images, d) in images.txt order

Processing as in Koh et al.: ``c`` (what ``g`` learns) is each attribute's class-level majority
vote on the training images, and only attributes present (after voting) in at least
``min_classes`` classes are kept (112 attributes in 28 groups on the real data); the group of an
attribute is its name before ``::``. Every split also keeps each image's own labels
(``c_instance``, what an expert reveals at instance level) and their ``certainty`` (1 not
visible, 2 guessing, 3 probably, 4 definitely). 20 % of the training images (seeded) form the
validation split.

Inputs ``x`` are image features: ``features.pt`` when the folder has one, else the output of a
pretrained backbone given by path (``backbone=FILE``): a TorchScript file, a ``torch.export``
``.pt2`` file, a pickled ``nn.Module``, or a torchvision state dict with ``backbone_arch=NAME`` (e.g. ``resnet18``, whose
classifier is dropped). Images are resized (shorter side ``image_size`` × 8 / 7), centre-cropped
to ``image_size`` and normalised with the ImageNet mean and std. torchvision is imported only
where a pickled module or a named architecture needs it. Features are cached under
``$COMPRESS_CACHE/cub-features`` keyed by folder, backbone file and size.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.core.errors import BadInputError
from compress.core.io import atomic_file
from compress.model.loading import cache_dir
from evaluators.cbm.data.base import ConceptDataset, ConceptSplit, class_majority, split_indices

REQUIRED = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]


def read_table(path: Path, columns: int) -> list[list[str]]:
    """Whitespace-separated rows, first ``columns`` fields (some CUB rows carry extra ones)."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split(maxsplit=columns - 1) if columns == 2 else line.split()
        if fields:
            rows.append(fields[:columns])
    return rows


def find_attribute_names(root: Path) -> Path:
    for candidate in (
        root / "attributes" / "attributes.txt",
        root / "attributes.txt",
        root.parent / "attributes.txt",
    ):
        if candidate.is_file():
            return candidate
    raise BadInputError(
        f"{root}: attributes.txt not found in attributes/, the folder or its parent"
    )


def check_layout(root: Path) -> None:
    if not root.is_dir():
        raise BadInputError(f"CUB folder {root} does not exist: pass --data-path to CUB_200_2011/")
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if not (root / "attributes" / "image_attribute_labels.txt").is_file():
        missing.append("attributes/image_attribute_labels.txt")
    if missing:
        raise BadInputError(f"{root} is not a CUB_200_2011 folder: missing {', '.join(missing)}")


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
CLASSIFIERS = ("fc", "classifier", "heads", "head")


def import_torchvision(why: str) -> Any:
    """torchvision, imported only when needed; its absence (or a build that does not import
    beside this torch) is a one-line error."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or a RuntimeError from a mismatched build
        raise BadInputError(
            f"{why} needs torchvision, which does not import here ({type(exc).__name__}): "
            "install a torchvision matching this torch, or save the backbone as TorchScript"
        ) from exc
    return torchvision


def load_backbone(path: Path, arch: str | None = None) -> nn.Module:
    """A feature extractor from a file: TorchScript, a pickled module, or a torchvision state
    dict for the architecture ``arch`` (its classifier replaced by the identity)."""
    if arch is not None:
        models = import_torchvision(f"backbone_arch={arch}").models
        try:
            model = models.get_model(arch, weights=None)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (ValueError, RuntimeError, KeyError) as exc:
            reason = str(exc).splitlines()[0]
            raise BadInputError(f"backbone {path} as {arch}: {reason}") from exc
        for name in CLASSIFIERS:
            if hasattr(model, name):
                setattr(model, name, nn.Identity())
                break
        return model.eval()
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still loads
            return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError:
        pass  # not TorchScript: a pickled module or a state dict
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("torchvision"):
            import_torchvision(f"backbone {path}")
        raise BadInputError(f"backbone {path} needs module {exc.name} to load") from exc
    except Exception as exc:
        raise BadInputError(f"backbone {path} is not a torch file ({exc})") from exc
    if isinstance(loaded, nn.Module):
        return loaded.eval()
    raise BadInputError(
        f"backbone {path} holds a {type(loaded).__name__}, not a module: for a torchvision "
        "state dict add --option backbone_arch=NAME (e.g. resnet18)"
    )


def preprocess(file: Path, image_size: int) -> torch.Tensor:
    """(3, image_size, image_size): resize, centre crop, ImageNet normalisation."""
    from PIL import Image

    with Image.open(file) as image:
        rgb = image.convert("RGB")
        scale = round(image_size * 8 / 7) / min(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
        left, top = (rgb.width - image_size) // 2, (rgb.height - image_size) // 2
        rgb = rgb.crop((left, top, left + image_size, top + image_size))
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    image_tensor = pixels.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255.0
    return (image_tensor - IMAGENET_MEAN) / IMAGENET_STD


@torch.no_grad()
def extract_features(
    root: Path, paths: list[str], backbone: nn.Module, image_size: int, batch_size: int
) -> torch.Tensor:
    """Backbone outputs, flattened, for every image in ``paths``: (n_images, d)."""
    rows = []
    for start in range(0, len(paths), batch_size):
        batch = [
            preprocess(root / "images" / rel, image_size)
            for rel in paths[start : start + batch_size]
        ]
        out = backbone(torch.stack(batch))
        if not isinstance(out, torch.Tensor):
            raise BadInputError("the backbone must return one tensor of features per image")
        rows.append(out.float().flatten(1))
    return torch.cat(rows)


def feature_cache(root: Path, backbone: Path, arch: str | None, image_size: int) -> Path:
    """Where the features of one (folder, backbone file, arch, size) are kept."""
    stat = backbone.stat()
    key = f"{root.resolve()}|{backbone.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}|{image_size}"
    return cache_dir() / "cub-features" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def image_inputs(
    root: Path,
    paths: list[str],
    backbone: str | None,
    backbone_arch: str | None,
    image_size: int,
    batch_size: int,
) -> torch.Tensor:
    """``features.pt`` if present, else (cached) backbone features: (n_images, d)."""
    features = root / "features.pt"
    if features.is_file():
        x = torch.load(features, weights_only=True).float()
    elif backbone is None:
        raise BadInputError(
            f"{root} has no features.pt: pass --option backbone=FILE (a TorchScript or saved "
            "torch module, or a torchvision state dict with --option backbone_arch=NAME)"
        )
    elif not Path(backbone).is_file():
        raise BadInputError(f"backbone {backbone} does not exist: pass a TorchScript or .pt file")
    else:
        features = feature_cache(root, Path(backbone), backbone_arch, image_size)
        if features.is_file():
            x = torch.load(features, weights_only=True)
        else:
            model = load_backbone(Path(backbone), backbone_arch)
            x = extract_features(root, paths, model, image_size, batch_size)
            with atomic_file(features) as tmp:
                torch.save(x, tmp)
    if x.ndim != 2 or x.shape[0] != len(paths):
        raise BadInputError(
            f"{features} must be a (n_images={len(paths)}, d) tensor, got {tuple(x.shape)}"
        )
    return x


def load_cub(
    path: Path | None,
    seed: int = 0,
    min_classes: int = 10,
    backbone: str | None = None,
    backbone_arch: str | None = None,
    image_size: int = 224,
    batch_size: int = 32,
) -> ConceptDataset:
    """Load a CUB_200_2011 folder into a :class:`ConceptDataset` (module docstring)."""
    if path is None:
        raise BadInputError(
            "CUB-200 is not packaged: pass --data-path to your CUB_200_2011/ folder"
        )
    root = Path(path)
    check_layout(root)
    ids = {int(i): n for n, (i, _) in enumerate(read_table(root / "images.txt", 2))}
    paths = [p for _, p in read_table(root / "images.txt", 2)]
    y = torch.tensor([int(c) - 1 for _, c in read_table(root / "image_class_labels.txt", 2)])
    is_train = torch.tensor([f == "1" for _, f in read_table(root / "train_test_split.txt", 2)])
    class_names = [name for _, name in read_table(root / "classes.txt", 2)]
    attr_names = [name for _, name in read_table(find_attribute_names(root), 2)]
    c = torch.zeros(len(paths), len(attr_names))
    certainty = torch.zeros(len(paths), len(attr_names), dtype=torch.long)
    for image_id, attr_id, present, sure in read_table(
        root / "attributes" / "image_attribute_labels.txt", 4
    ):
        row, column = ids[int(image_id)], int(attr_id) - 1
        c[row, column], certainty[row, column] = float(present), int(sure)
    votes = class_majority(c[is_train], y[is_train], len(class_names))
    keep = (votes.sum(dim=0) >= min_classes).nonzero().flatten().tolist()
    if not keep:
        raise BadInputError(
            f"no attribute is present in >= {min_classes} classes: lower min_classes"
        )
    x = image_inputs(root, paths, backbone, backbone_arch, image_size, batch_size)
    whole = ConceptSplit(x, votes[y][:, keep], y, c[:, keep], certainty[:, keep])
    train_idx = is_train.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    fit, val, _ = split_indices(len(train_idx), (0.8, 0.2, 0.0), generator)
    names = [attr_names[i] for i in keep]
    group_names = list(dict.fromkeys(name.split("::")[0] for name in names))
    groups = [[j for j, n in enumerate(names) if n.split("::")[0] == g] for g in group_names]
    return ConceptDataset(
        name="cub",
        train=whole.subset(train_idx[fit]),
        val=whole.subset(train_idx[val]),
        test=whole.subset((~is_train).nonzero().flatten()),
        concept_names=names,
        class_names=class_names,
        groups=groups,
        group_names=group_names,
    )
