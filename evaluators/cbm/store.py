"""A trained CBM on disk: ``model.pt`` (state dict) + ``cbm.json`` (everything else).

``cbm.json`` keys: ``format`` (``compress.cbm/1``), ``model`` (:class:`CBMConfig`), ``data``
(:class:`DataSpec`: later commands rebuild the same splits from it), ``training`` (settings,
seconds, val/test metrics) and, for a pruned model, ``prune`` (method, sparsity, layers, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from evaluators.cbm.data import DataSpec
from evaluators.cbm.models import CBMConfig, ConceptBottleneckModel, build_cbm

FORMAT = "compress.cbm/1"
META_NAME = "cbm.json"
WEIGHTS_NAME = "model.pt"
LEGACY_SYNTHETIC_Z_STD = 2.0


def check_output(folder: Path, overwrite: bool) -> Path:
    """Refuse a folder holding a CBM unless ``overwrite`` (or a file in its place), before any
    work; nothing is created until :func:`save_cbm`, so a failed command leaves no folder."""
    folder = Path(folder)
    if (folder / META_NAME).exists() and not overwrite:
        raise BadInputError(
            f"{folder} already holds a CBM: pass --overwrite or choose another --output"
        )
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"--output {folder} is a file: choose a folder")
    return folder


def save_cbm(folder: Path, model: ConceptBottleneckModel, meta: dict[str, Any]) -> None:
    """Write the weights, then the metadata (atomically; its presence marks a complete folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS_NAME)
    write_json_atomic(folder / META_NAME, {"format": FORMAT, **meta})


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_NAME
    if not path.is_file():
        raise BadInputError(
            f"{folder} has no {META_NAME}: point to a folder written by compress cbm train"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if meta.get("format") != FORMAT:
        raise BadInputError(f"{path} has format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def load_cbm(folder: Path) -> tuple[ConceptBottleneckModel, dict[str, Any], DataSpec]:
    """The model (eval mode), its metadata and the spec of its data."""
    meta = read_meta(folder)
    config = CBMConfig(**meta["model"])
    model = build_cbm(config)
    weights = Path(folder) / WEIGHTS_NAME
    if not weights.is_file():
        raise BadInputError(f"{folder} has no {WEIGHTS_NAME}: retrain with compress cbm train")
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), meta, saved_spec(meta["data"])


def saved_spec(data: dict[str, Any]) -> DataSpec:
    """The data spec of a saved model. Folders trained before synthetic knobs were recorded
    (:func:`~evaluators.cbm.data.recorded`) used the generator's old ``z_std`` default, 2.0."""
    spec = DataSpec(**data)
    if spec.name == "synthetic" and "z_std" not in spec.options:
        spec.options["z_std"] = LEGACY_SYNTHETIC_Z_STD
    return spec
