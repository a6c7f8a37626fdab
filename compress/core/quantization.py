"""The quantization options of a pruning run (recipe.json's ``quantize``), declared without
torch: ``--quantize`` (the integer grid), ``--group-size`` and ``--quantizer``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from compress.core.errors import BadInputError
from compress.core.options import choice, option

QUANTIZATION = "Quantization"
GROUP_SIZE = 32  # --group-size's default: GGUF's Q4_0/Q8_0 block, and it divides 576
BITS_HELP = "none, int8 or int4: symmetric integers per group, float16 scales, zero exact; evaluated as saved (dequantized), exported exactly."
GROUP_HELP = "Input columns per scale (0: one per output row); 32 is GGUF's block."
QUANTIZER_HELP = "gptq (error compensation on calibration data) or rtn (round to nearest)."


class QuantBits(str, Enum):
    """The integer grid the kept weights are rounded to (none: leave them as they are)."""

    none = "none"
    int8 = "int8"
    int4 = "int4"


class Quantizer(str, Enum):
    """gptq: each column's rounding error pushed into the columns not yet rounded (OBS, the mask
    held fixed; inside SparseGPT's own loop under ``--reconstruct lr``); rtn: round to nearest."""

    gptq = "gptq"
    rtn = "rtn"


@dataclass(kw_only=True)
class QuantizeConfig:
    PANEL: ClassVar[str] = QUANTIZATION

    bits: QuantBits = option(
        QuantBits.none,
        flags="--quantize",
        metavar="GRID",
        help=BITS_HELP,
    )
    group_size: int = option(
        GROUP_SIZE,
        flags="--group-size",
        help=GROUP_HELP,
    )
    quantizer: Quantizer = option(
        Quantizer.gptq,
        flags="--quantizer",
        metavar="QUANTIZER",
        help=QUANTIZER_HELP,
    )

    def __post_init__(self) -> None:
        self.bits = choice(QuantBits, self.bits, "--quantize")
        self.quantizer = choice(Quantizer, self.quantizer, "--quantizer")
        if self.group_size < 0:
            raise BadInputError(
                f"--group-size is {self.group_size}; give a count of input columns such as 32 "
                f"(0: one scale per output row)"
            )

    @property
    def enabled(self) -> bool:
        return self.bits is not QuantBits.none

    @property
    def bit_count(self) -> int:
        return {QuantBits.int8: 8, QuantBits.int4: 4}[self.bits]

    def label(self) -> str:
        """e.g. ``int4-g32`` (``int8-channel`` per output row): the default folder name's part."""
        return f"{self.bits.value}-" + (f"g{self.group_size}" if self.group_size else "channel")
