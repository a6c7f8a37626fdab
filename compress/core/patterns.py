"""Sparsity patterns (unstructured or N:M), parsed from the user's terms. Imports no torch, so
the CLI can validate ``--pattern`` with a fast ``--help``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from compress.core.errors import BadInputError


@dataclass(frozen=True)
class SparsityPattern:
    """``n``/``m`` are None for unstructured sparsity; otherwise keep N of every M weights."""

    n: int | None = None
    m: int | None = None

    @property
    def structured(self) -> bool:
        return self.m is not None

    @property
    def sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (None when unstructured)."""
        return None if self.m is None else 1.0 - self.n / self.m

    def __str__(self) -> str:
        return "unstructured" if self.m is None else f"{self.n}:{self.m}"

    @classmethod
    def parse(cls, text: str) -> SparsityPattern:
        """Parse ``unstructured`` or ``N:M`` (e.g. ``2:4``)."""
        text = text.strip().lower()
        if text == "unstructured":
            return cls()
        match = re.fullmatch(r"(\d+):(\d+)", text)
        if not match:
            raise BadInputError(
                f"pattern {text!r} is not understood: use 'unstructured' or N:M such as 2:4"
            )
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m:
            raise BadInputError(f"pattern {text}: N must satisfy 0 < N < M (e.g. 2:4, 4:8)")
        return cls(n, m)

    def check_width(self, in_features: int, layer: str) -> None:
        """Raise if an N:M pattern does not tile the layer's input width."""
        if self.m is not None and in_features % self.m:
            raise BadInputError(
                f"layer {layer}: input width {in_features} is not divisible by M={self.m}; "
                f"choose another pattern or --skip this layer"
            )
