"""The pruning methods ``--method`` offers and each one's options, declared without torch.

Each method's options are a dataclass made with :func:`~compress.core.options.option`,
registered here under the method's name with :func:`method`; its pruner
(``compress/algorithms/pruners/<name>.py``) is registered with that class (``@register(SparseGPTOptions)``)
and built with an instance of it. The declarations live in the core, not beside the pruners,
because the CLI builds ``--help`` and reads recipe.json from them without loading torch, and the
config tree imports nothing above the core (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from compress.core.errors import BadInputError
from compress.core.options import option

# name -> options class, in the order --method lists them
METHODS: dict[str, type] = {}


def method(name: str, summary: str) -> Callable[[type], type]:
    """Class decorator: the options of the method ``name`` (``summary``: its score in a few
    symbols, for ``--method``'s help)."""

    def add(cls: type) -> type:
        cls.METHOD, cls.SUMMARY = name, summary
        METHODS[name] = cls
        return cls

    return add


class MagnitudeScope(str, Enum):
    """Where magnitude scores compete: one threshold per layer (the papers' baseline) or per row."""

    layer = "layer"
    row = "row"


@method("magnitude", "|W|")
@dataclass(kw_only=True)
class MagnitudeOptions:
    scope: MagnitudeScope = option(
        MagnitudeScope.layer,
        flags="--magnitude-scope",
        metavar="SCOPE",
        help="Magnitude only: one |W| threshold per layer (the papers' baseline) or per output row.",
    )

    def __post_init__(self) -> None:
        try:
            self.scope = MagnitudeScope(self.scope)
        except ValueError:
            raise BadInputError(f"--magnitude-scope {self.scope!r}: choose layer, row") from None


@method("wanda", "|W|·‖X‖₂")
@dataclass(kw_only=True)
class WandaOptions:
    """Wanda has no options of its own."""


@method("sparsegpt", "OBS update")
@dataclass(kw_only=True)
class SparseGPTOptions:
    blocksize: int = option(
        128,
        flags="--sparsegpt-blocksize",
        help="SparseGPT only: columns per lazy block B (masks are chosen per block).",
    )
    percdamp: float = option(
        0.01,
        flags="--sparsegpt-damp",
        help="SparseGPT only: damping λ added to diag(H), as a share of its mean.",
    )

    def __post_init__(self) -> None:
        if self.blocksize < 1 or not self.percdamp > 0:
            raise BadInputError(
                f"--sparsegpt-blocksize must be >= 1 and --sparsegpt-damp > 0, "
                f"got {self.blocksize} and {self.percdamp}"
            )


@method("none", "existing zeros kept")
@dataclass(kw_only=True)
class KeepOptions:
    """Prunes nothing (quantize only): the weights' own zeros are the mask."""


def methods_help() -> str:
    """``--method``'s help, each method with its summary: "magnitude (|W|), ... or ..."."""
    named = [f"{name} ({cls.SUMMARY})" for name, cls in METHODS.items()]
    return "Pruner: " + " or ".join([", ".join(named[:-1]), named[-1]]) + "."
