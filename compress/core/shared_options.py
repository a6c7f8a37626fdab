"""Option groups every command shares: device, dtype, seed, output folder, overwrite, the rows
of self-generation.

Each is a field factory for a config dataclass (``device: str = device_option()``), so the
flag, default and help are written here once however many commands take them.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from compress.core.options import option


class DType(str, Enum):
    """Weight dtype names (``auto``: bfloat16 on a GPU that has it, float32 elsewhere)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Split(str, Enum):
    """The splits of a text source (``compress.data.calibration``: every 10th document is test)."""

    train = "train"
    validation = "validation"
    test = "test"


def device_option(panel: str | None = None) -> Any:
    """``panel``: the ``--help`` panel listing it (None: its config's)."""
    return option("auto", flags="--device", help="auto, cpu, cuda or cuda:N.", panel=panel)


def dtype_option(panel: str | None = None) -> Any:
    return option(
        DType.auto,
        flags="--dtype",
        metavar="DTYPE",
        help="auto (bf16 on a GPU that supports it, fp32 elsewhere), float32, bfloat16, float16.",
        panel=panel,
    )


def seed_option(what: str, default: int = 0) -> Any:
    """``what``: what the seed chooses, for the help line (e.g. "calibration windows")."""
    return option(default, flags="--seed", help=f"Seed for {what}.")


def output_option(
    default: Any, what: str, *, short: bool = False, lock: bool = False, panel: str | None = None
) -> Any:
    """``default``: a path, None, or ``dataclasses.MISSING`` (required); ``short``: also ``-o``;
    ``lock``: the command holds the output's lock while it runs (a second run is refused)."""
    flags = ("--output", "-o") if short else ("--output",)
    return option(
        default,
        flags=flags,
        help=f"{what} (written atomically).",
        writes=True,
        lock=lock,
        panel=panel,
    )


def overwrite_option(
    what: str = "an existing non-empty output folder", panel: str | None = None
) -> Any:
    return option(False, flags="--overwrite", help=f"Replace {what}.", reproduce=False, panel=panel)


def generation_rows_option(flag: str, what: str) -> Any:
    """The rows self-generation decodes together (``compress calib generate``, ``prune
    --self-gen N``): one default for both."""
    return option(
        16,
        flags=flag,
        help=f"{what} at once, the rows of one decoding batch: more rows read the weights once "
        "for more tokens, until memory or compute runs out.",
    )


def progress_option() -> Any:
    return option(True, flags="--progress", help="Show a progress bar.")
