"""``compress quantize``: a model folder rounded to an integer grid as it is, its zeros kept
(the prune pipeline with ``--method none``, :class:`~compress.core.quantize_run.QuantizeRunConfig`)."""

from __future__ import annotations

from compress.cli import prune
from compress.core.options import command
from compress.core.quantize_run import QuantizeRunConfig


def run(config: QuantizeRunConfig) -> None:
    """Quantize a model (a pruned folder keeps every zero exactly) block by block to an int4 or int8 grid: GPTQ on calibration data or round to nearest; writes the dequantized weights with quantization.safetensors, recipe.json, report.json and a card, for compress export gguf, onnx or compressed."""
    prune.run(config.to_prune_config())


quantize = command(QuantizeRunConfig, run, run.__doc__ or "", name="quantize")
