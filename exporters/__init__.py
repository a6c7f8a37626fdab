"""Shipping a compressed model: each format an :class:`~exporters.base.Exporter` registered in
:mod:`exporters.registry` (ONNX checked in ONNX Runtime, :mod:`exporters.onnx`; bitsandbytes,
:mod:`exporters.bnb`; compressed-tensors, :mod:`exporters.compressed`), and the Hugging Face Hub
push (:mod:`exporters.hub`)."""
