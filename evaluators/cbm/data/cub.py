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

Processing: concept labels are replaced by their class-level majority vote on the training
images, and only attributes present (after voting) in at least ``min_classes`` classes are kept
(112 attributes in 28 groups on the real data); the group of an attribute is its name before
``::``. Inputs are ``features.pt`` when given (e.g. from a pretrained CNN), else the pixels of
each image resized to ``image_size`` squared (RGB, [0, 1]), flattened. 20 % of the training
images (seeded) form the validation split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.errors import BadInputError
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


def image_inputs(root: Path, paths: list[str], image_size: int) -> torch.Tensor:
    """``features.pt`` if present, else resized RGB pixels, flattened: (n_images, d)."""
    features = root / "features.pt"
    if features.is_file():
        x = torch.load(features, weights_only=True).float()
        if x.ndim != 2 or x.shape[0] != len(paths):
            raise BadInputError(
                f"{features} must be a (n_images={len(paths)}, d) tensor, got {tuple(x.shape)}"
            )
        return x
    from PIL import Image

    rows = []
    for rel in paths:
        with Image.open(root / "images" / rel) as image:
            small = image.convert("RGB").resize((image_size, image_size))
            rows.append(torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8))
    return torch.stack(rows).float() / 255.0


def load_cub(
    path: Path | None, seed: int = 0, min_classes: int = 10, image_size: int = 32
) -> ConceptDataset:
    """Load a CUB_200_2011 folder into a :class:`ConceptDataset`."""
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
    for image_id, attr_id, present, *_ in read_table(
        root / "attributes" / "image_attribute_labels.txt", 4
    ):
        c[ids[int(image_id)], int(attr_id) - 1] = float(present)
    votes = class_majority(c[is_train], y[is_train], len(class_names))
    keep = (votes.sum(dim=0) >= min_classes).nonzero().flatten().tolist()
    if not keep:
        raise BadInputError(
            f"no attribute is present in >= {min_classes} classes: lower min_classes"
        )
    whole = ConceptSplit(image_inputs(root, paths, image_size), votes[y][:, keep], y)
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
