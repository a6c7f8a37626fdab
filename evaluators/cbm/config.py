"""The CBM evaluator's settings and choices, torch-free so that ``compress cbm --help`` stays fast.

Each field that is a ``compress cbm`` option is declared here once with :func:`option`: its flag,
default, choices (the str-Enums) and help. The modules that use them (models, training,
bottleneck, intervene, criteria) import them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import seed_option

# the criteria in the order of the paper's tables; evaluators.cbm.criteria registers one each
NAMES = ["rand", "ucp", "lcp", "cctp", "ectp", "eudtp"]


class DataName(str, Enum):
    """Concept datasets by name (:data:`evaluators.cbm.data.LOADERS` has one loader each)."""

    synthetic = "synthetic"
    led7digit = "led7digit"
    zoo = "zoo"
    cub = "cub"
    table = "table"


class Variant(str, Enum):
    IND = "IND"
    SEQ = "SEQ"
    JNT = "JNT"
    JNTP = "JNT+P"

    @property
    def bottleneck(self) -> str:
        return "logit" if self is Variant.JNT else "sigmoid"


class Conceptualisation(str, Enum):
    SOFT = "soft"
    HARD = "hard"
    SAMPLED = "sampled"


class ReplacementValues(str, Enum):
    INSTANCE = "instance"
    CLASS = "class"


class Granularity(str, Enum):
    INDIVIDUAL = "individual"
    GROUP = "group"


class Scope(str, Enum):
    SINGLE = "single"
    BATCH = "batch"


def split_list(text: str) -> list[str]:
    """The non-empty items of a comma list."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _widths(flag: str) -> Any:
    def parse(text: str) -> list[int]:
        try:
            return [int(part) for part in split_list(text)]
        except ValueError as exc:
            raise BadInputError(
                f"{flag} {text!r}: give comma-separated widths such as 100,100"
            ) from exc

    return parse


def _join(values: list[Any]) -> str:
    return ",".join(str(getattr(value, "value", value)) for value in values)


@dataclass
class CBMConfig:
    """Architecture of the default CBM: MLP ``g`` and linear (or MLP) ``f``.

    The input, concept and class counts come from the data (0 until then, see
    :func:`~evaluators.cbm.models.build_cbm`); the rest is chosen on the command line.
    """

    input_dim: int = 0
    n_concepts: int = 0
    n_classes: int = 0
    variant: Variant = option(Variant.IND, help="Training variant.")
    concept_hidden: list[int] = option(
        default_factory=lambda: [100],
        help="Hidden widths of g (MLP).",
        cli_type=str,
        to_cli=_join,
        from_cli=_widths("--concept-hidden"),
    )
    label_hidden: list[int] = option(
        default_factory=list,
        help="Hidden widths of f; empty = linear.",
        cli_type=str,
        to_cli=_join,
        from_cli=_widths("--label-hidden"),
    )

    def __post_init__(self) -> None:
        self.variant = Variant(self.variant)
        widths = [self.input_dim, self.n_concepts, self.n_classes]
        if min([*widths, 0]) < 0 or min([*self.concept_hidden, *self.label_hidden, 1]) < 1:
            raise BadInputError(f"CBM widths must be positive: {asdict(self)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "variant": self.variant.value}


@dataclass
class TrainConfig:
    epochs: int = option(60, help="Training epochs.")
    batch_size: int = option(128, help="Minibatch size.")
    lr: float = option(1e-3, help="Adam learning rate.")
    weight_decay: float = 0.0
    concept_weight: float = option(0.01, help="λ of the joint loss L_y + λ·L_c (JNT, JNT+P).")
    seed: int = seed_option("the data, initialisation, shuffling")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise BadInputError(f"training settings must be positive: {asdict(self)}")


def _criteria(text: str) -> list[str]:
    return list(NAMES) if text.strip().lower() == "all" else split_list(text.lower())


def _criteria_text(names: list[str]) -> str:
    return "all" if list(names) == NAMES else ",".join(names)


def _levels(text: str) -> list[Granularity]:
    try:
        return [Granularity(level) for level in split_list(text.lower())]
    except ValueError as exc:
        raise BadInputError(f"--level {text!r}: use individual, group or both") from exc


@dataclass
class InterventionConfig:
    criteria: list[str] = option(
        default_factory=lambda: list(NAMES),
        help="Comma list of rand,ucp,lcp,cctp,ectp,eudtp, or all.",
        cli_type=str,
        to_cli=_criteria_text,
        from_cli=_criteria,
    )
    levels: list[Granularity] = option(
        default_factory=lambda: [Granularity.INDIVIDUAL],
        flags="--level",
        help="Comma list of individual,group.",
        cli_type=str,
        to_cli=_join,
        from_cli=_levels,
    )
    scope: Scope = option(
        Scope.SINGLE, help="single: n per sample; batch: n × batch size per batch."
    )
    max_interventions: int = option(
        20, help="Intervention steps (concepts, or groups, per sample)."
    )
    values: ReplacementValues = option(
        ReplacementValues.INSTANCE,
        help="Replacement values: the sample's own, or its class majority.",
    )
    conceptualisation: Conceptualisation = option(
        Conceptualisation.SOFT, help="How f reads unrevealed concepts."
    )
    batch_size: int = option(64, help="Batch size B for --scope batch.")
    samples: int = 5
    percentiles: tuple[float, float] = (5.0, 95.0)
    costs: list[float] | None = None
    split: str = "test"
    seed: int = seed_option("RAND and sampled concepts")
    rescore: bool = option(
        False,
        help="Re-score concepts after every intervention (default: rank once, unintervened).",
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.criteria if name not in NAMES]
        if unknown or not self.criteria:
            raise BadInputError(
                f"criteria {unknown or '[]'} unknown: choose from {', '.join(NAMES)} or all"
            )
        self.levels = [Granularity(level) for level in self.levels]
        self.scope, self.values = Scope(self.scope), ReplacementValues(self.values)
        self.conceptualisation = Conceptualisation(self.conceptualisation)
        if self.max_interventions < 0 or self.batch_size < 1:
            raise BadInputError("max_interventions must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["levels"] = [level.value for level in self.levels]
        for key in ("scope", "values", "conceptualisation"):
            out[key] = getattr(self, key).value
        return out
