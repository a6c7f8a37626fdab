"""``compress quantize``'s options: a model folder quantized as it is (its zeros kept exactly),
run as the prune pipeline with ``--method none --reconstruct lr`` (:meth:`to_prune_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from compress.core.config import (
    CALIBRATION,
    EVALUATION,
    OUTPUT,
    PLACEMENT,
    CalibrationConfig,
    EvalConfig,
    PruneConfig,
    ReconstructConfig,
    Technique,
)
from compress.core.options import option
from compress.core.quantization import (
    BITS_HELP,
    GROUP_HELP,
    GROUP_SIZE,
    QUANTIZATION,
    QUANTIZER_HELP,
    QuantBits,
    QuantizeConfig,
    Quantizer,
)
from compress.core.shared_options import (
    DType,
    device_option,
    dtype_option,
    output_option,
    overwrite_option,
)


@dataclass(kw_only=True)
class QuantizeRunConfig:
    PANELS: ClassVar[tuple[str, ...]] = (QUANTIZATION, CALIBRATION, EVALUATION, PLACEMENT, OUTPUT)

    model: str | None = option(
        None,
        argument=True,
        help="Model folder (a compress prune output keeps its zeros) or Hub id; omitted: the embedded SmolLM2-135M-Instruct.",
    )
    bits: QuantBits = option(
        QuantBits.int4, flags="--quantize", metavar="GRID", help=BITS_HELP, panel=QUANTIZATION
    )
    group_size: int = option(GROUP_SIZE, flags="--group-size", help=GROUP_HELP, panel=QUANTIZATION)
    quantizer: Quantizer = option(
        QuantizeConfig.quantizer,
        flags="--quantizer",
        metavar="QUANTIZER",
        help=QUANTIZER_HELP,
        panel=QUANTIZATION,
    )
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device: str = device_option(PLACEMENT)
    dtype: DType = dtype_option(PLACEMENT)
    output: str | None = output_option(
        None,  # None: out/<model-name>-<grid>-g<group size>
        "Output folder (default: out/<model>-<grid>-g<group size>)",
        panel=OUTPUT,
    )
    overwrite: bool = overwrite_option(panel=OUTPUT)

    def to_prune_config(self) -> PruneConfig:
        """The prune run that does it: nothing pruned, nothing trained, every block rounded,
        in one forward per block where the calibration set fits one batch (``--one-pass``)."""
        return PruneConfig(
            model=self.model,
            method="none",
            quantize=QuantizeConfig(
                bits=self.bits, group_size=self.group_size, quantizer=self.quantizer
            ),
            reconstruct=ReconstructConfig(technique=Technique.lr),
            one_pass=True,  # GPTQ's order: each layer on the rounded ones before it
            calibration=self.calibration,
            evaluation=self.evaluation,
            device=self.device,
            dtype=self.dtype,
            output=str(self.output) if self.output else None,
            overwrite=self.overwrite,
        )
