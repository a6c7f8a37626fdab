"""GGUF for llama.cpp and Ollama, holding exactly the evaluated integers of a quantized folder.

- :mod:`~exporters.gguf.blocks`: Q4_0 / Q8_0 blocks packed from the record's integers and scales;
- :mod:`~exporters.gguf.families`: llama.cpp's architecture and hyperparameters per family;
- :mod:`~exporters.gguf.vocab`: the tokenizer (byte-level BPE) and its pre-tokenizer's name;
- :mod:`~exporters.gguf.convert`: the checks and the tensor-by-tensor writer;
- :mod:`~exporters.gguf.exporter`: ``compress export gguf``, its record and load snippets.

Built on gguf-py (the ``gguf`` package maintained with llama.cpp): its writer, tensor-name map,
quantization types and vocabulary helpers.
"""

from exporters.gguf.exporter import GgufExportConfig, GgufExporter

__all__ = ["GgufExportConfig", "GgufExporter"]
