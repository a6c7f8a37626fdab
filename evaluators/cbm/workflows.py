"""The library entry points behind ``compress cbm``: train, intervene, compare, prune.

Each reads and writes a model folder (:mod:`evaluators.cbm.store`); intervention results go
to ``<folder>/interventions/``: ``curves.json`` (settings + curves), ``curves.csv`` (one row per
criterion, level and step) and ``curves.png`` (+ ``curves_cost.png`` when costs are given).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compress.algorithms.masks import SparsityPattern
from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from evaluators.cbm.data import DataSpec, load_dataset, recorded
from evaluators.cbm.intervene import Curve, InterventionConfig, evaluate_interventions
from evaluators.cbm.models import CBMConfig, Variant, build_cbm
from evaluators.cbm.plots import plot_curves
from evaluators.cbm.prune import prune_linears
from evaluators.cbm.store import check_output, load_cbm, save_cbm
from evaluators.cbm.training import TrainConfig, evaluate, finetune_sam, train_cbm

RESULTS = "interventions"


def train_to_folder(
    output: Path,
    spec: DataSpec,
    variant: Variant,
    train_cfg: TrainConfig,
    concept_hidden: list[int],
    label_hidden: list[int],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a CBM on ``spec``'s data and save it; return the saved metadata."""
    folder = check_output(output, overwrite)
    spec = recorded(spec)
    data = load_dataset(spec)
    config = CBMConfig(
        data.input_dim, data.n_concepts, data.n_classes, variant, concept_hidden, label_hidden
    )
    model = build_cbm(config, seed=train_cfg.seed)
    result = train_cbm(model, data, config.variant, train_cfg)
    meta = {
        "model": config.to_dict(),
        "data": spec.to_dict(),
        "training": {
            "config": asdict(train_cfg),
            "seconds": result["seconds"],
            "final_loss": {name: losses[-1] for name, losses in result["history"].items()},
            "val": result["val"],
            "test": result["test"],
        },
    }
    save_cbm(folder, model, meta)
    return meta


def load_costs(path: Path | None, concept_names: list[str]) -> list[float] | None:
    """Per-concept costs from JSON: a list (concept order) or {concept name: cost}."""
    if path is None:
        return None
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"--costs {path}: not a readable JSON file ({exc})") from exc
    if isinstance(raw, dict):
        missing = [name for name in concept_names if name not in raw]
        if missing:
            raise BadInputError(
                f"--costs {path} lacks concepts {missing[:5]}: give every concept a cost"
            )
        raw = [raw[name] for name in concept_names]
    if not isinstance(raw, list) or len(raw) != len(concept_names):
        raise BadInputError(
            f"--costs {path}: need {len(concept_names)} costs (a list or a name map)"
        )
    return [float(v) for v in raw]


def write_curves(
    folder: Path, models: dict[str, list[Curve]], cfg: InterventionConfig, title: str
) -> dict[str, Path]:
    """Save curves as JSON, CSV and PNG under ``folder``; return the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "curves.json", "csv": folder / "curves.csv"}
    write_json_atomic(
        paths["json"],
        {
            "config": cfg.to_dict(),
            "models": {m: [c.to_dict() for c in curves] for m, curves in models.items()},
        },
    )
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["model", "criterion", "level", "scope", "step", "concepts", "cost", "error"]
        )
        for model, curves in models.items():
            for c in curves:
                for step, point in enumerate(zip(c.concepts, c.cost, c.error, strict=True)):
                    writer.writerow([model, c.criterion, c.level, c.scope, step, *point])
    paths["png"] = plot_curves(models, folder / "curves.png", "concepts", title)
    if cfg.costs is not None:
        paths["png_cost"] = plot_curves(models, folder / "curves_cost.png", "cost", title)
    return paths


def intervene_folder(
    folder: Path, cfg: InterventionConfig, costs: Path | None = None
) -> tuple[list[Curve], dict[str, Path]]:
    """Intervention curves of a saved model, written to ``folder/interventions``."""
    model, meta, spec = load_cbm(folder)
    data = load_dataset(spec)
    cfg.costs = load_costs(costs, data.concept_names)
    curves = evaluate_interventions(model, data, cfg)
    name = Path(folder).name
    title = f"{name}: {meta['model']['variant']} on {spec.name}"
    return curves, write_curves(Path(folder) / RESULTS, {name: curves}, cfg, title)


def compare_folders(
    folder_a: Path, folder_b: Path, output: Path, cfg: InterventionConfig, costs: Path | None = None
) -> tuple[dict[str, list[Curve]], dict[str, Path]]:
    """Curves of two models on the same data with the same settings, overlaid in one plot."""
    loaded = [load_cbm(folder) for folder in (folder_a, folder_b)]
    if loaded[0][2] != loaded[1][2]:
        raise BadInputError(
            f"{folder_a} and {folder_b} were trained on different data ({loaded[0][2].name}, "
            f"{loaded[1][2].name} or other settings): compare models of the same dataset"
        )
    data = load_dataset(loaded[0][2])
    cfg.costs = load_costs(costs, data.concept_names)
    names = [Path(folder_a).name, Path(folder_b).name]
    if names[0] == names[1]:
        names = [str(folder_a), str(folder_b)]
    models = {
        name: evaluate_interventions(model, data, cfg)
        for name, (model, _, _) in zip(names, loaded, strict=True)
    }
    return models, write_curves(
        Path(output), models, cfg, f"{names[0]} vs {names[1]} on {data.name}"
    )


def prune_folder(
    folder: Path,
    output: Path,
    method: str,
    sparsity: float,
    pattern: SparsityPattern,
    cfg: InterventionConfig,
    sam_epochs: int = 0,
    rho: float = 0.05,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prune ``g`` of a saved CBM (calibrated on its training inputs), optionally fine-tune with
    SAM, save it to ``output`` and write dense-vs-pruned intervention curves there."""
    if Path(output).resolve() == Path(folder).resolve():
        raise BadInputError("--output must differ from the dense model's folder")
    dense, meta, spec = load_cbm(folder)
    pruned, _, _ = load_cbm(folder)
    data = load_dataset(spec)
    variant = Variant(meta["model"]["variant"])
    out = check_output(output, overwrite)
    layers, masks = prune_linears(pruned.g, data.train.x, method, sparsity, pattern)
    record: dict[str, Any] = {
        "source": str(folder),
        "method": method,
        "sparsity": sparsity,
        "pattern": str(pattern),
        "calibration_samples": len(data.train),
        "layers": layers,
        "after_pruning": evaluate(pruned, data.test),
    }
    if sam_epochs > 0:
        train_cfg = TrainConfig(**{**meta["training"]["config"], "epochs": sam_epochs})
        losses = finetune_sam(pruned, data, variant, masks, train_cfg, rho)
        record["sam"] = {"epochs": sam_epochs, "rho": rho, "final_loss": losses[-1]}
    record["test"] = evaluate(pruned, data.test)
    save_cbm(out, pruned, {**meta, "prune": record})
    models = {
        "dense": evaluate_interventions(dense, data, cfg),
        "pruned": evaluate_interventions(pruned, data, cfg),
    }
    title = f"{method} {sparsity:.0%} on {spec.name}: dense vs pruned"
    record["paths"] = {
        k: str(v) for k, v in write_curves(out / RESULTS, models, cfg, title).items()
    }
    record["curves"] = models
    return record
