"""Shipping a compressed model: ONNX export checked in ONNX Runtime (:mod:`exporters.onnx`) and
the Hugging Face Hub push (:mod:`exporters.hub`)."""
