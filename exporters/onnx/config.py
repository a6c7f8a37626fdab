"""The options of ``compress export onnx``: :class:`ExportOnnxConfig` (the command: folder,
``--output``, ``--overwrite``) embedding :class:`OnnxExportConfig` (what an export does, saved in
export_report.json), and which route runs (optimum-onnx or onnxruntime-genai's builder)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import output_option, overwrite_option
from exporters.base import FOLDER_HELP
from exporters.onnx.genai_quant import LM_HEAD, PROJECTIONS


class Quantization(str, Enum):
    """The quantized graphs :mod:`exporters.onnx.quantize` writes (its ``METHODS`` describe them)."""

    int8 = "int8"
    int8_weights = "int8-weights"
    int4 = "int4"


class Runtime(str, Enum):
    auto = "auto"
    optimum = "optimum"
    genai = "genai"


QUANTIZATIONS = tuple(method.value for method in Quantization)
RUNTIMES = tuple(runtime.value for runtime in Runtime)
BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits: a power of two, at least 16
GENAI_ALGOS = ("default", "rtn", "k_quant", "k_quant_mixed")  # the model builder's algo_config


def _enum_value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


@dataclass
class OnnxExportConfig:
    """Everything an export does; saved in export_report.json."""

    with_past: bool = option(
        True,
        flags="--with-past",
        negative="--no-past",
        help="Export past key/values (fast generation).",
    )
    quantize: str | None = option(  # a QUANTIZATIONS name (plain text in export_report.json)
        None,
        help="Also write model_int8.onnx and measure it: int8 = ORT dynamic quantization "
        "(weights and activations); int8-weights = 8-bit weights only (MatMulNBits); "
        "int4 = 4-bit weights only (MatMulNBits, model_int4.onnx, parity-checked).",
        cli_type=Quantization | None,
        from_cli=_enum_value,
    )
    opset: int | None = option(None, help="ONNX opset (default: optimum's for the architecture).")
    block_size: int = option(
        32,
        help="int4: weights per quantization block (a quantized folder: its own group size, "
        "its integers kept as they are).",
    )
    runtime: str = option(
        "auto",
        help="optimum: optimum-onnx export (legacy: the legacy-onnx extra, transformers 4.57); genai: "
        "onnxruntime-genai's model builder (fp32, or int4 with --quantize int4; run with its "
        "generator); auto: optimum where it is installed, else genai.",
        cli_type=Runtime,
        from_cli=_enum_value,
    )
    # genai int4: the builder's algorithm for the 4-bit weights; k_quant (llama.cpp's k-quant
    # scale search) over round-to-nearest's "default" and "rtn"; k_quant_mixed adds the builder's
    # own 8-bit layers (first and last eighth, every third block's qkv/down)
    genai_algo: str = option(
        "k_quant", help="--runtime genai int4: default, rtn, k_quant or k_quant_mixed."
    )
    # genai int4: projections kept at 8 bits in every block. Quantizing one kind of projection at a
    # time showed qkv and down_proj the most sensitive on a pruned SmolLM2-135M; keeping those
    # and the LM head at 8 bits lost less than half of k_quant_mixed's perplexity for a slightly
    # larger file
    genai_int8: str = option(
        "qkv_proj,down_proj,lm_head",
        help="--runtime genai int4: projections kept at 8 bits in every block, comma-separated "
        f"from {', '.join(PROJECTIONS)} (lm_head: the LM head, and so the tied embedding); none "
        "for all 4-bit.",
    )
    atol: float = 1e-4  # max |logit difference| allowed between PyTorch and ORT (fp32)
    # a quantized folder's int4/int8 graph (its own integers, float32 compute): the same max and
    # identical tokens, with room for MatMulNBits summing in another order than PyTorch's GEMM
    # (SmolLM2-135M at int4, blocks of 32, onnxruntime-genai: max 1.8e-4, tokens identical)
    exact_atol: float = 1e-3
    # int4: mean |logit difference| allowed against PyTorch over the parity prompts; the max and
    # differing greedy tokens are recorded, not judged (SmolLM2-135M, blocks of 32: mean 2.3,
    # max 16 on logits up to 31)
    int4_atol: float = 4.0
    max_new_tokens: int = 8  # greedy tokens compared per parity prompt
    eval_source: str = option("wikipedia", help="Held-out text for the int8 perplexity change.")
    eval_windows: int = option(4, help="Perplexity windows for --quantize.")
    eval_seqlen: int = option(256, help="Tokens per perplexity window.")
    latency_tokens: int = 64  # prompt length for the latency comparison
    latency_new_tokens: int = 16
    latency_repeats: int = 3  # timed runs per figure (median), after one warm-up run

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            choices = " or ".join(QUANTIZATIONS)
            raise BadInputError(f"--quantize {self.quantize!r} is not supported: use {choices}")
        if self.runtime not in RUNTIMES:
            raise BadInputError(
                f"--runtime {self.runtime!r} is not supported: use auto, optimum or genai"
            )
        if self.runtime == "genai" and self.quantize == "int8":
            raise BadInputError(
                "--runtime genai builds fp32 or int4 (int8-weights from a folder quantized to "
                "int8): drop --quantize or use int4"
            )
        if self.genai_algo not in GENAI_ALGOS:
            choices = ", ".join(GENAI_ALGOS)
            raise BadInputError(f"--genai-algo {self.genai_algo!r} is not supported: use {choices}")
        self._check_int8()
        if self.block_size not in BLOCK_SIZES:
            sizes = ", ".join(map(str, BLOCK_SIZES))
            raise BadInputError(f"--block-size {self.block_size} is not supported: use {sizes}")
        if self.opset is not None and self.opset < 14:
            raise BadInputError(f"--opset {self.opset} is too old for decoders: use 14 or newer")
        positive = ("max_new_tokens", "eval_windows", "eval_seqlen", "latency_tokens")
        for name in (*positive, "latency_new_tokens", "latency_repeats"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def int8_projections(self) -> tuple[str, ...]:
        """``genai_int8`` as names (none: empty)."""
        names = [name.strip() for name in self.genai_int8.split(",") if name.strip()]
        return () if names == ["none"] else tuple(names)

    def _check_int8(self) -> None:
        unknown = [name for name in self.int8_projections if name not in PROJECTIONS]
        if unknown:
            raise BadInputError(
                f"--genai-int8 {','.join(unknown)} is not a projection: use names from "
                f"{', '.join(PROJECTIONS)}, or none"
            )
        if self.genai_algo == "default" and LM_HEAD in self.int8_projections:
            raise BadInputError(  # onnxruntime-genai 0.18: its tied embedding reads a missing tensor
                "--genai-algo default cannot keep lm_head at 8 bits (the builder then writes a "
                "tied embedding ONNX Runtime cannot load): use rtn or k_quant, or drop lm_head "
                "from --genai-int8"
            )

    def require_runtime(self) -> None:
        """Refuse, in one line naming what to install, a route this environment cannot run.

        Raises:
            BadInputError: optimum-onnx or onnxruntime-genai is missing.
        """
        if self.route == "optimum":
            needs = f" (which --quantize {self.quantize} needs)" if self.quantize else ""
            require_optimum(f"the optimum route of export onnx{needs}")
        if self.route == "genai" and importlib.util.find_spec("onnxruntime_genai") is None:
            raise BadInputError(
                "--runtime genai needs onnxruntime-genai: pip install 'compress[export]'"
            )

    @property
    def route(self) -> str:
        """The route that runs: ``runtime``, or for ``auto`` optimum where it is installed and
        genai elsewhere (int8 graphs come from the optimum route only)."""
        if self.runtime != "auto":
            return self.runtime
        genai = not optimum_installed() and self.quantize in (None, "int4")
        return "genai" if genai else "optimum"

    @property
    def task(self) -> str:
        return "text-generation-with-past" if self.with_past else "text-generation"


def optimum_installed() -> bool:
    """Whether optimum-onnx's exporter can be imported (it needs transformers < 4.58)."""
    return importlib.util.find_spec("optimum") is not None and (
        importlib.util.find_spec("optimum.exporters.onnx") is not None
    )


def require_optimum(what: str) -> None:
    """Refuse ``what`` in one line saying what to install where optimum-onnx is missing.

    Raises:
        BadInputError: optimum-onnx is not installed.
    """
    if optimum_installed():
        return
    import transformers

    raise BadInputError(
        f"{what} needs optimum-onnx, which needs transformers 4.57 (installed: "
        f"{transformers.__version__}): pip install 'compress[legacy-onnx]' in a separate "
        "environment (it pins 'transformers>=4.57,<4.58' 'huggingface_hub<1.0'); or use "
        "--runtime genai (fp32 or int4)"
    )


@dataclass(frozen=True)
class ExportOnnxConfig:
    """``compress export onnx``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    output: Path | None = output_option(
        None, "Export folder (default: DIR/onnx)", short=True, lock=True
    )
    onnx: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    overwrite: bool = overwrite_option("an existing export folder")

    @property
    def target(self) -> Path:
        return self.output or self.folder / "onnx"
