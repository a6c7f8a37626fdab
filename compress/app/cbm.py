"""``compress cbm`` as configs and workflows: what each command takes, declared once as options,
and the runs that turn a request into the evaluator's calls (:mod:`evaluators.cbm.workflows`).

Module-level imports stay torch-free (the CLI builds its commands from these dataclasses, and
``--help`` must not load torch); the evaluator is imported inside each run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.core.config import Method
from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import overwrite_option
from evaluators.cbm.config import (
    CBMConfig,
    DataName,
    InterventionConfig,
    TrainConfig,
    split_list,
)


def _folder() -> Any:
    return option(argument=True, help="A model folder written by `compress cbm train`.")


def _output(what: str) -> Any:
    return option(flags=("--output", "-o"), help=f"Folder for {what}.", writes=True)


def _overwrite() -> Any:
    return overwrite_option("a model already in --output")


def loader_options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values parse as JSON (numbers, true/false) or stay strings."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"--option {pair!r}: write KEY=VALUE, e.g. z_std=1.0")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _loader_pairs(options: dict[str, Any]) -> list[str] | None:
    return [f"{key}={json.dumps(value)}" for key, value in options.items()] or None


@dataclass
class TrainRequest:
    """``compress cbm train``: the data, the architecture, the training, where it goes."""

    output: Path = _output("the model")
    data: DataName = option(DataName.synthetic, help="Dataset.")
    data_path: Path | None = option(
        None, help="Data file/folder (Zoo.rda, a KEEL .dat, CUB_200_2011/, a CSV table)."
    )
    concepts: str | None = option(None, help="--data table: comma list of concept columns.")
    label: str | None = option(None, help="--data table: the class column.")
    features: str | None = option(
        None, help="--data table: comma list of numeric input columns (default: none)."
    )
    loader: dict[str, Any] = option(
        default_factory=dict,
        flags="--option",
        help="Loader option KEY=VALUE (repeat), e.g. z_std=1.0.",
        cli_type=list[str] | None,
        to_cli=_loader_pairs,
        from_cli=loader_options,
    )
    model: CBMConfig = field(default_factory=CBMConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    overwrite: bool = _overwrite()

    def table_columns(self) -> dict[str, Any]:
        """Loader options of ``--data table`` from its column flags; they fit no other data."""
        given = {"concepts": self.concepts, "label": self.label, "features": self.features}
        if self.data is not DataName.table:
            used = [f"--{name}" for name, value in given.items() if value is not None]
            if used:
                raise BadInputError(f"{', '.join(used)} apply to --data table only")
            return {}
        if self.concepts is None or self.label is None:
            raise BadInputError("--data table needs --concepts COLS and --label COL")
        return {
            "concepts": split_list(self.concepts),
            "label": self.label.strip(),
            "features": split_list(self.features or ""),
        }


@dataclass
class CurveRequest:
    """What ``intervene`` and ``compare`` share: the intervention settings and costs."""

    settings: InterventionConfig = field(default_factory=InterventionConfig)
    costs: Path | None = option(None, help="JSON per-concept costs: a list, or {concept: cost}.")


@dataclass
class InterveneRequest:
    folder: Path = _folder()
    curves: CurveRequest = field(default_factory=CurveRequest)


@dataclass
class CompareRequest:
    folder_a: Path = _folder()
    folder_b: Path = _folder()
    output: Path = _output("the overlay")
    curves: CurveRequest = field(default_factory=CurveRequest)


@dataclass
class PruneRequest:
    folder: Path = _folder()
    output: Path = _output("the pruned model")
    method: Method = option(Method.wanda, help="Pruner for g's Linear layers.")
    sparsity: float = option(0.5, help="Fraction of weights removed, s.")
    pattern: str = option("unstructured", help="unstructured or N:M, e.g. 2:4.")
    sam_epochs: int = option(0, help="Epochs of SAM fine-tuning after pruning (0 = none).")
    rho: float = option(0.05, help="SAM neighbourhood radius ρ.")
    settings: InterventionConfig = field(default_factory=InterventionConfig)
    overwrite: bool = _overwrite()


def train(request: TrainRequest) -> dict[str, Any]:
    """Train and save the model; return its saved metadata."""
    from evaluators.cbm.data import DataSpec
    from evaluators.cbm.workflows import train_to_folder

    options = {**request.loader, **request.table_columns()}
    path = str(request.data_path) if request.data_path else None
    spec = DataSpec(request.data.value, path, request.training.seed, options)
    return train_to_folder(
        request.output,
        spec,
        request.model.variant,
        request.training,
        request.model.concept_hidden,
        request.model.label_hidden,
        request.overwrite,
    )


def intervene(request: InterveneRequest) -> tuple[list[Any], dict[str, Path]]:
    from evaluators.cbm.workflows import intervene_folder

    return intervene_folder(request.folder, request.curves.settings, request.curves.costs)


def compare(request: CompareRequest) -> tuple[dict[str, list[Any]], dict[str, Path]]:
    from evaluators.cbm.workflows import compare_folders

    curves = request.curves
    return compare_folders(
        request.folder_a, request.folder_b, request.output, curves.settings, curves.costs
    )


def prune(request: PruneRequest) -> dict[str, Any]:
    """Prune g; the record also holds ``pattern`` (parsed) and the ``sparsity`` used (an N:M
    pattern fixes it)."""
    from compress.algorithms.masks import SparsityPattern
    from evaluators.cbm.workflows import prune_folder

    pattern = SparsityPattern.parse(request.pattern)
    sparsity = pattern.sparsity if pattern.structured else request.sparsity
    return prune_folder(
        request.folder,
        request.output,
        request.method.value,
        sparsity,
        pattern,
        request.settings,
        request.sam_epochs,
        request.rho,
        request.overwrite,
    )
