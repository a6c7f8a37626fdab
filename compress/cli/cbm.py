"""``compress cbm``: concept bottleneck models and test-time intervention (Shin et al., ICML 2023).

Commands are thin: parse, build the configs, call :mod:`evaluators.cbm.workflows`, print a table.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from compress.cli.base import new_app
from compress.core.errors import BadInputError

app = new_app("Concept bottleneck models: train, intervene, compare, prune.")


class DataName(str, Enum):
    synthetic = "synthetic"
    led7digit = "led7digit"
    zoo = "zoo"
    cub = "cub"
    table = "table"


class VariantName(str, Enum):
    IND = "IND"
    SEQ = "SEQ"
    JNT = "JNT"
    JNTP = "JNT+P"


class Method(str, Enum):
    magnitude = "magnitude"
    wanda = "wanda"
    sparsegpt = "sparsegpt"


class ScopeName(str, Enum):
    single = "single"
    batch = "batch"


class ValuesName(str, Enum):
    instance = "instance"
    class_ = "class"


class ConceptualisationName(str, Enum):
    soft = "soft"
    hard = "hard"
    sampled = "sampled"


Folder = Annotated[Path, typer.Argument(help="A model folder written by `compress cbm train`.")]
Criteria = Annotated[str, typer.Option(help="Comma list of rand,ucp,lcp,cctp,ectp,eudtp, or all.")]
Levels = Annotated[str, typer.Option("--level", help="Comma list of individual,group.")]
Scope = Annotated[
    ScopeName, typer.Option(help="single: n per sample; batch: n × batch size per batch.")
]
MaxInterventions = Annotated[
    int, typer.Option(help="Intervention steps (concepts, or groups, per sample).")
]
Values = Annotated[
    ValuesName, typer.Option(help="Replacement values: the sample's own, or its class majority.")
]
Conceptualisation = Annotated[
    ConceptualisationName, typer.Option(help="How f reads unrevealed concepts.")
]
BatchSize = Annotated[int, typer.Option(help="Batch size B for --scope batch.")]
Costs = Annotated[
    Path | None, typer.Option(help="JSON per-concept costs: a list, or {concept: cost}.")
]
Seed = Annotated[int, typer.Option(help="Seed for RAND and sampled concepts.")]
Rescore = Annotated[
    bool,
    typer.Option(
        help="Re-score concepts after every intervention (default: rank once, unintervened)."
    ),
]


def _intervention_config(
    criteria: str,
    levels: str,
    scope: ScopeName,
    max_interventions: int,
    values: ValuesName,
    conceptualisation: ConceptualisationName,
    batch_size: int,
    seed: int,
    rescore: bool = False,
) -> Any:
    from evaluators.cbm.criteria import NAMES
    from evaluators.cbm.intervene import Granularity, InterventionConfig

    names = NAMES if criteria.strip().lower() == "all" else _split(criteria.lower())
    try:
        granularity = [Granularity(level) for level in _split(levels.lower())]
    except ValueError as exc:
        raise BadInputError(f"--level {levels!r}: use individual, group or both") from exc
    return InterventionConfig(
        criteria=list(names),
        levels=granularity,
        scope=scope.value,
        max_interventions=max_interventions,
        values=values.value,
        conceptualisation=conceptualisation.value,
        batch_size=batch_size,
        seed=seed,
        rescore=rescore,
    )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _widths(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in _split(text)]
    except ValueError as exc:
        raise BadInputError(
            f"{flag} {text!r}: give comma-separated widths such as 100,100"
        ) from exc


def _options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parse as JSON (numbers, true/false) or stay strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--option {pair!r}: write KEY=VALUE, e.g. z_std=1.0")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _table_columns(
    data: DataName, concepts: str | None, label: str | None, features: str | None
) -> dict[str, Any]:
    """Loader options of ``--data table`` from its column flags; the flags fit no other data."""
    given = {"concepts": concepts, "label": label, "features": features}
    if data is not DataName.table:
        used = [f"--{name}" for name, value in given.items() if value is not None]
        if used:
            raise BadInputError(f"{', '.join(used)} apply to --data table only")
        return {}
    if concepts is None or label is None:
        raise BadInputError("--data table needs --concepts COLS and --label COL")
    return {
        "concepts": _split(concepts),
        "label": label.strip(),
        "features": _split(features or ""),
    }


def _print_curves(models: dict[str, list[Any]]) -> None:
    for model, curves in models.items():
        for c in curves:
            mid = len(c.error) // 2
            typer.echo(
                f"{model:>12} {c.criterion:>6} {c.level:>10}  error {100 * c.error[0]:5.1f}% -> "
                f"{100 * c.error[mid]:5.1f}% ({c.concepts[mid]:.1f} concepts) -> "
                f"{100 * c.error[-1]:5.1f}% ({c.concepts[-1]:.1f} concepts)"
            )


@app.command()
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the model.")],
    data: Annotated[DataName, typer.Option(help="Dataset.")] = DataName.synthetic,
    data_path: Annotated[
        Path | None,
        typer.Option(help="Data file/folder (Zoo.rda, a KEEL .dat, CUB_200_2011/, a CSV table)."),
    ] = None,
    concepts: Annotated[
        str | None, typer.Option(help="--data table: comma list of concept columns.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="--data table: the class column.")] = None,
    features: Annotated[
        str | None,
        typer.Option(help="--data table: comma list of numeric input columns (default: none)."),
    ] = None,
    variant: Annotated[VariantName, typer.Option(help="Training variant.")] = VariantName.IND,
    option: Annotated[
        list[str] | None, typer.Option(help="Loader option KEY=VALUE (repeat), e.g. z_std=1.0.")
    ] = None,
    concept_hidden: Annotated[str, typer.Option(help="Hidden widths of g (MLP).")] = "100",
    label_hidden: Annotated[str, typer.Option(help="Hidden widths of f; empty = linear.")] = "",
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    concept_weight: Annotated[
        float | None, typer.Option(help="λ of the joint loss L_y + λ·L_c (JNT, JNT+P).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the data, initialisation, shuffling.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --output.")] = False,
) -> None:
    """Train a concept bottleneck model and save it to --output."""
    from evaluators.cbm.data import DataSpec
    from evaluators.cbm.models import Variant
    from evaluators.cbm.training import TrainConfig
    from evaluators.cbm.workflows import train_to_folder

    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "concept_weight": concept_weight}
    train_cfg = TrainConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    options = {**_options(option or []), **_table_columns(data, concepts, label, features)}
    spec = DataSpec(data.value, str(data_path) if data_path else None, seed, options)
    meta = train_to_folder(
        output,
        spec,
        Variant(variant.value),
        train_cfg,
        _widths(concept_hidden, "--concept-hidden"),
        _widths(label_hidden, "--label-hidden"),
        overwrite,
    )
    test = meta["training"]["test"]
    typer.echo(
        f"trained {variant.value} on {data.value} in {meta['training']['seconds']:.1f}s: "
        f"test task error {100 * test['task_error']:.1f}%, "
        f"concept error {100 * test['concept_error']:.1f}% -> {output}"
    )


@app.command()
def intervene(
    folder: Folder,
    criteria: Criteria = "all",
    level: Levels = "individual",
    scope: Scope = ScopeName.single,
    max_interventions: MaxInterventions = 20,
    values: Values = ValuesName.instance,
    conceptualisation: Conceptualisation = ConceptualisationName.soft,
    batch_size: BatchSize = 64,
    costs: Costs = None,
    seed: Seed = 0,
    rescore: Rescore = False,
) -> None:
    """Task error vs concepts revealed, per criterion; writes FOLDER/interventions/."""
    from evaluators.cbm.workflows import intervene_folder

    cfg = _intervention_config(
        criteria, level, scope, max_interventions, values, conceptualisation, batch_size, seed,
        rescore,
    )  # fmt: skip
    curves, paths = intervene_folder(folder, cfg, costs)
    _print_curves({folder.name: curves})
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def compare(
    folder_a: Folder,
    folder_b: Folder,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the overlay.")],
    criteria: Criteria = "all",
    level: Levels = "individual",
    scope: Scope = ScopeName.single,
    max_interventions: MaxInterventions = 20,
    values: Values = ValuesName.instance,
    conceptualisation: Conceptualisation = ConceptualisationName.soft,
    batch_size: BatchSize = 64,
    costs: Costs = None,
    seed: Seed = 0,
    rescore: Rescore = False,
) -> None:
    """Overlay the intervention curves of two models trained on the same data."""
    from evaluators.cbm.workflows import compare_folders

    cfg = _intervention_config(
        criteria, level, scope, max_interventions, values, conceptualisation, batch_size, seed,
        rescore,
    )  # fmt: skip
    models, paths = compare_folders(folder_a, folder_b, output, cfg, costs)
    _print_curves(models)
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def prune(
    folder: Folder,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the pruned model.")],
    method: Annotated[Method, typer.Option(help="Pruner for g's Linear layers.")] = Method.wanda,
    sparsity: Annotated[float, typer.Option(help="Fraction of weights removed, s.")] = 0.5,
    pattern: Annotated[str, typer.Option(help="unstructured or N:M, e.g. 2:4.")] = "unstructured",
    sam_epochs: Annotated[
        int, typer.Option(help="Epochs of SAM fine-tuning after pruning (0 = none).")
    ] = 0,
    rho: Annotated[float, typer.Option(help="SAM neighbourhood radius ρ.")] = 0.05,
    criteria: Criteria = "all",
    level: Levels = "individual",
    max_interventions: MaxInterventions = 20,
    seed: Seed = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a model already in --output.")] = False,
) -> None:
    """Prune the concept predictor g (calibrated on the training inputs) and compare its
    intervention curves with the dense model's."""
    from compress.masks import SparsityPattern
    from evaluators.cbm.workflows import prune_folder

    parsed = SparsityPattern.parse(pattern)
    sparsity = parsed.sparsity if parsed.structured else sparsity  # N:M fixes the sparsity
    cfg = _intervention_config(
        criteria,
        level,
        ScopeName.single,
        max_interventions,
        ValuesName.instance,
        ConceptualisationName.soft,
        64,
        seed,
    )
    record = prune_folder(
        folder, output, method.value, sparsity, parsed, cfg, sam_epochs, rho, overwrite
    )
    _print_curves(record["curves"])
    typer.echo(
        f"pruned g with {method.value} at {sparsity:.0%} ({parsed}): test task error "
        f"{100 * record['test']['task_error']:.1f}%, concept error "
        f"{100 * record['test']['concept_error']:.1f}% -> {output}"
    )
