"""``compress cbm``: concept bottleneck models and test-time intervention (Shin et al., ICML 2023).

Each command is built from its request in :mod:`compress.app.cbm` (options declared there and in
:mod:`evaluators.cbm.config`); this module only prints what the workflows return.
"""

from __future__ import annotations

from typing import Any

import typer

from compress.app import cbm as workflows
from compress.cli.base import new_app
from compress.core.options import command

app = new_app("Concept bottleneck models: train, intervene, compare, prune.")


def _print_curves(models: dict[str, list[Any]]) -> None:
    for model, curves in models.items():
        for c in curves:
            mid = len(c.error) // 2
            typer.echo(
                f"{model:>12} {c.criterion:>6} {c.level:>10}  error {100 * c.error[0]:5.1f}% -> "
                f"{100 * c.error[mid]:5.1f}% ({c.concepts[mid]:.1f} concepts) -> "
                f"{100 * c.error[-1]:5.1f}% ({c.concepts[-1]:.1f} concepts)"
            )


def _wrote(paths: dict[str, Any]) -> None:
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


def _train(request: workflows.TrainRequest) -> None:
    meta = workflows.train(request)
    test = meta["training"]["test"]
    typer.echo(
        f"trained {request.model.variant.value} on {request.data.value} in "
        f"{meta['training']['seconds']:.1f}s: test task error {100 * test['task_error']:.1f}%, "
        f"concept error {100 * test['concept_error']:.1f}% -> {request.output}"
    )


def _intervene(request: workflows.InterveneRequest) -> None:
    curves, paths = workflows.intervene(request)
    _print_curves({request.folder.name: curves})
    _wrote(paths)


def _compare(request: workflows.CompareRequest) -> None:
    models, paths = workflows.compare(request)
    _print_curves(models)
    _wrote(paths)


def _prune(request: workflows.PruneRequest) -> None:
    record = workflows.prune(request)
    _print_curves(record["curves"])
    typer.echo(
        f"pruned g with {record['method']} at {record['sparsity']:.0%} ({record['pattern']}): "
        f"test task error {100 * record['test']['task_error']:.1f}%, concept error "
        f"{100 * record['test']['concept_error']:.1f}% -> {request.output}"
    )


COMMANDS = {
    "train": (
        workflows.TrainRequest,
        _train,
        "Train a concept bottleneck model and save it to --output.",
    ),
    "intervene": (
        workflows.InterveneRequest,
        _intervene,
        "Task error vs concepts revealed, per criterion; writes FOLDER/interventions/.",
    ),
    "compare": (
        workflows.CompareRequest,
        _compare,
        "Overlay the intervention curves of two models trained on the same data.",
    ),
    "prune": (
        workflows.PruneRequest,
        _prune,
        "Prune the concept predictor g (calibrated on the training inputs) and compare its\n"
        "    intervention curves with the dense model's.",
    ),
}
for _name, (_request, _run, _doc) in COMMANDS.items():
    app.command(_name)(command(_request, _run, _doc, name=_name))
