"""Export a saved model folder to ONNX and prove, in ONNX Runtime, that it computes the same thing.

Steps (:func:`export_onnx`): optimum-onnx's ``main_export`` (task ``text-generation-with-past`` or
``text-generation``, float32) into a temporary folder; a tied embedding and LM head stored once
(:mod:`exporters.onnx.tied`); the tokenizer beside it; the parity check of :mod:`exporters.onnx.parity`
against the PyTorch model; optionally int8 or int4 quantization measured by
:mod:`exporters.onnx.quantize` (int4 parity-checked against PyTorch too, within ``int4_atol``);
``export_report.json``; then the folder is renamed into place. With ``runtime="genai"`` the
model is built by onnxruntime-genai's model builder instead (:mod:`exporters.onnx.genai`) and checked
the same way through its generator.

optimum's own validation only logs a tolerance miss as a warning and keeps the export; here a miss
raises :class:`ExportParityError` after marking the report, so a bad export never passes silently.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from compress.core.errors import BadInputError, ExportParityError
from compress.core.io import atomic_folder, write_json_atomic
from compress.core.options import option
from compress.core.report import (
    REPORT_NAME,
    ArtifactRecord,
    PerplexitySection,
    artifact_record,
    now_iso,
    package_versions,
    perplexity_protocol,
    record_artifact,
)
from exporters.onnx.files import (
    MODEL_FILE,
    has_past,
    label,
    model_bytes,
    opset,
    quantized_file,
    size_note,
    weight_zeros,
)
from exporters.onnx.genai_quant import LM_HEAD, PROJECTIONS
from exporters.onnx.tied import share_in_file

if TYPE_CHECKING:
    from exporters.onnx.genai import GenaiLM
    from exporters.onnx.parity import ParityResult

EXPORT_REPORT = "export_report.json"
EXPORT_FORMAT = "compress.export/1"


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
    block_size: int = option(32, help="int4: weights per quantization block.")
    runtime: str = option(
        "auto",
        help="optimum: optimum-onnx export (the onnx-optimum extra, transformers 4.57); genai: "
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
    # genai int4: projections kept at 8 bits in every block. On the 2:4 SparseGPT SmolLM2-135M
    # (fp32 120.53 on 16 x 512 Wikipedia test windows), round-to-nearest int4 everywhere but one
    # kind of projection at a time showed qkv and down_proj the most sensitive; k_quant_mixed gave
    # 145.41 (+20.6%, 108 MiB), k_quant with qkv_proj, down_proj and lm_head at 8 bits 130.57
    # (+8.3%, 124 MiB)
    genai_int8: str = option(
        "qkv_proj,down_proj,lm_head",
        help="--runtime genai int4: projections kept at 8 bits in every block, comma-separated "
        f"from {', '.join(PROJECTIONS)} (lm_head: the LM head, and so the tied embedding); none "
        "for all 4-bit.",
    )
    atol: float = 1e-4  # max |logit difference| allowed between PyTorch and ORT (fp32)
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
        if self.runtime == "genai" and self.quantize not in (None, "int4"):
            raise BadInputError("--runtime genai builds fp32 or int4: drop --quantize or use int4")
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
        f"{transformers.__version__}): pip install 'compress[onnx-optimum]' "
        "'transformers>=4.57,<4.58' 'huggingface_hub<1.0'; or use --runtime genai (fp32 or int4)"
    )


def export_onnx(
    folder: Path, output: Path, config: OnnxExportConfig, overwrite: bool = False
) -> dict:
    """Export ``folder`` to ``output``, check it in ONNX Runtime, and return export_report.json.

    Raises:
        BadInputError: ``folder`` is not a model folder, or ``output`` exists (without overwrite).
        ExportParityError: ORT disagrees with PyTorch (``output`` is kept with a failed report),
            or onnxruntime-genai fails inside the check (nothing is written).
    """
    folder, output = Path(folder).resolve(), Path(output).resolve()
    _check_paths(folder, output, overwrite)
    config.require_runtime()
    run = _genai_export_and_check if config.route == "genai" else _export_and_check
    with atomic_folder(output) as staging:
        report = run(folder, staging, config)
    if (folder / REPORT_NAME).is_file():  # the files with their bytes, for the card
        record_artifact(folder, onnx_artifact(report, _relative_to(output, folder)))
    for parity in _parities(report):
        if not parity["passed"]:
            raise ExportParityError(_parity_message(parity, output))
    return report


def onnx_artifact(report: dict, path: str) -> ArtifactRecord:
    """The model folder's ``artifacts`` record of an export (``report``: its export_report.json,
    which keeps the rest) at ``path``: ``onnx`` (optimum-onnx, with its quantized graph when
    made) or ``onnx-genai``. Its perplexity is the quantized graph's against the float one's
    (optimum) or PyTorch's (genai int4); its parity the float graph's (genai: the build's)."""
    genai = report.get("runtime") == "onnxruntime-genai"
    tag = next((t for t in ("int8", "int4") if report.get(t)), None)
    measured = report.get("perplexity") if genai else tag and report[tag]["perplexity"]
    perplexity: PerplexitySection | None = None
    if measured:
        before, after = ("pytorch_fp32", "int4") if genai else ("fp32", tag)
        windows, seqlen = measured["windows"], measured["seqlen"]
        tokens = measured.get("tokens", windows * seqlen)
        protocol = perplexity_protocol(
            measured["dataset"], measured["split"], seqlen, windows, tokens
        )
        perplexity = {**protocol, "before": measured[before], "after": measured[after]}
    if genai:
        keys = ("precision", "algorithm", "execution_provider")
        details = {key: report[key] for key in keys}
    else:
        details = {key: report[key] for key in ("task", "opset", "dtype")} | {"quantized": tag}
    return artifact_record(
        format="onnx-genai" if genai else "onnx",
        path=path,
        files=report["files"],
        parity=report["parity"],
        perplexity=perplexity,
        load=_load_snippets(genai, path, tag and quantized_file(tag)),
        details={**details, "report": EXPORT_REPORT},
    )


def _load_snippets(genai: bool, path: str, quantized: str | None) -> list[dict]:
    """How to load an export at ``path`` (``{REPO}``: the repo id or folder it lies in)."""
    if genai:
        code = f'import onnxruntime_genai as og\n\nmodel = og.Model("{path}")  # a local copy'
        return [{"runtime": "onnxruntime-genai", "code": code}]
    where = f'"{path}"' if Path(path).is_absolute() else f'"{{REPO}}", subfolder="{path}"'
    head = "from optimum.onnxruntime import ORTModelForCausalLM\n\n"
    snippets = [
        {
            "runtime": "ONNX Runtime through optimum-onnx",
            "code": f"{head}model = ORTModelForCausalLM.from_pretrained({where})",
        }
    ]
    if quantized:
        code = (
            f'{head}model = ORTModelForCausalLM.from_pretrained({where}, file_name="{quantized}")'
        )
        snippets.append({"runtime": f"ONNX Runtime, {quantized}", "code": code})
    return snippets


def _parities(report: dict) -> list[dict]:
    """Every parity check the export ran: the float graph's, then the int4 graph's."""
    int4 = report.get("int4", {}).get("parity")
    return [report["parity"], *([int4] if int4 else [])]


def _export_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    from optimum.exporters.onnx import main_export

    from compress.models import load_model
    from exporters.onnx.parity import check_parity, encode_prompts

    loaded = load_model(str(folder), device="cpu", dtype="float32")
    main_export(
        str(folder),
        staging,
        task=config.task,
        opset=config.opset,
        device="cpu",
        do_validation=False,  # replaced by the stricter check below
        library_name="transformers",
    )
    tied = share_in_file(staging / MODEL_FILE)
    loaded.tokenizer.save_pretrained(staging)
    pad_token_id = _pad_token_id(loaded.tokenizer)
    ort_model = load_ort(staging, MODEL_FILE)
    parity = check_parity(
        loaded.model,
        ort_model,
        encode_prompts(loaded.tokenizer),
        config.max_new_tokens,
        config.atol,
        pad_token_id,
    )
    fp32_bytes = model_bytes(staging)
    zeros = weight_zeros(staging / MODEL_FILE)
    report = {
        "format": EXPORT_FORMAT,
        "source": str(folder),
        "config": asdict(config),
        "task": config.task,
        "dtype": "float32",
        "opset": opset(staging / MODEL_FILE),
        "files": {MODEL_FILE: fp32_bytes},
        "parity": parity.to_dict(),
        "size": {"fp32_bytes": fp32_bytes, **zeros, "note": size_note(fp32_bytes, zeros)},
        "tied_embedding": tied,
        "versions": package_versions(),
        "created": now_iso(),
    }
    if parity.passed and config.quantize:
        tag = label(config.quantize)
        report[tag] = _quantize_and_measure(staging, ort_model, loaded, config)
        report["files"][quantized_file(tag)] = report[tag]["bytes"][tag]
    write_json_atomic(staging / EXPORT_REPORT, report)
    return report


def _quantize_and_measure(staging: Path, ort_model, loaded, config: OnnxExportConfig) -> dict:
    from exporters.onnx.parity import check_parity, encode_prompts
    from exporters.onnx.quantize import METHODS, compare_int8, eval_windows, quantize_int8

    tokenizer, tag = loaded.tokenizer, label(config.quantize)
    windows = eval_windows(tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen)
    quantize_int8(staging, config.quantize, config.block_size)
    quantized = load_ort(staging, quantized_file(tag))
    latency_ids = windows[:1, : config.latency_tokens]
    result = compare_int8(
        ort_model,
        quantized,
        staging,
        windows,
        latency_ids,
        config.latency_new_tokens,
        config.latency_repeats,
        _pad_token_id(tokenizer),
        tag,
    )
    count, seqlen = windows.shape
    measured_on = perplexity_protocol(config.eval_source, "test", seqlen, count, windows.numel())
    result["perplexity"] = {**measured_on, **result["perplexity"]}
    method = METHODS[config.quantize].format(block_size=config.block_size)
    if tag == "int4":
        parity = check_parity(
            loaded.model,
            quantized,
            encode_prompts(tokenizer),
            config.max_new_tokens,
            config.int4_atol,
            _pad_token_id(tokenizer),
            quantized=True,
        )
        result["parity"] = parity.to_dict()
        result["block_size"] = config.block_size
    return {"quantize": config.quantize, "method": method, **result}


def _genai_export_and_check(folder: Path, staging: Path, config: OnnxExportConfig) -> dict:
    """Build with onnxruntime-genai's model builder; parity (and for int4 perplexity against
    PyTorch's) through its generator."""
    from compress.models import load_model
    from exporters.onnx.genai import build, execution_provider
    from exporters.onnx.genai_quant import check_eight_bit, int4_quant_config
    from exporters.onnx.quantize import eval_windows, window_perplexity

    precision = "int4" if config.quantize == "int4" else "fp32"
    provider = execution_provider()
    loaded = load_model(str(folder), device="cpu", dtype="float32")  # refuses damaged weights
    int4 = precision == "int4"
    layers = loaded.model.config.num_hidden_layers
    int8 = config.int8_projections if int4 else ()
    quant = int4_quant_config(config.genai_algo, config.block_size, int8, layers) if int4 else None
    build(folder, staging, precision, provider, quant)
    eight_bit = check_eight_bit(staging, int8, layers) if int4 else {}
    loaded.tokenizer.save_pretrained(staging)  # the ids PyTorch saw, for run-onnx too
    model, parity = _genai_parity(staging, loaded, config, int4)
    size = model_bytes(staging)
    report = {
        "format": EXPORT_FORMAT,
        "source": str(folder),
        "config": asdict(config),
        "runtime": "onnxruntime-genai",
        "precision": precision,
        "algorithm": config.genai_algo if int4 else None,
        "int8_projections": list(int8),
        "int8_matmuls": eight_bit,
        "execution_provider": provider,
        "files": {MODEL_FILE: size},
        "parity": parity.to_dict(),
        "size": {f"{precision}_bytes": size},
        "versions": package_versions(),
        "created": now_iso(),
    }
    if parity.passed and int4:
        windows = eval_windows(
            loaded.tokenizer, config.eval_source, config.eval_windows, config.eval_seqlen
        )
        before = window_perplexity(loaded.model, windows)
        after = window_perplexity(model, windows)
        report["perplexity"] = {
            "dataset": config.eval_source,
            "split": "test",
            "windows": int(windows.shape[0]),
            "seqlen": int(windows.shape[1]),
            "pytorch_fp32": before,
            "int4": after,
            "relative_change": (after - before) / before,
        }
    write_json_atomic(staging / EXPORT_REPORT, report)
    return report


def _genai_parity(
    staging: Path, loaded, config: OnnxExportConfig, int4: bool
) -> tuple[GenaiLM, ParityResult]:
    """The build loaded in onnxruntime-genai and its parity check against PyTorch.

    Raises:
        ExportParityError: the runtime fails inside the check; the first line of its message.
    """
    from exporters.onnx.genai import GenaiLM
    from exporters.onnx.parity import check_parity, encode_prompts

    try:
        model = GenaiLM(staging)
        parity = check_parity(
            loaded.model,
            model,
            encode_prompts(loaded.tokenizer),
            config.max_new_tokens,
            config.int4_atol if int4 else config.atol,
            _pad_token_id(loaded.tokenizer),
            quantized=int4,
        )
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportParityError(
            f"onnxruntime-genai failed in the parity check against PyTorch: {first}"
        ) from error
    return model, parity


def load_ort(folder: Path, file_name: str = MODEL_FILE, threads: int | None = None):
    """An ``ORTModelForCausalLM`` on the CPU for one graph file of an export folder.

    It uses the key/value cache when the graph was exported with past key/values, and
    ``threads`` intra-op threads (default: as many as torch uses, so timings compare like with
    like).
    """
    require_optimum("running an optimum-onnx export")
    import onnxruntime
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ORTModelForCausalLM.from_pretrained(
        folder,
        file_name=file_name,
        use_cache=has_past(Path(folder) / file_name),
        session_options=options,
    )


def generate_text(
    folder: Path, prompt: str, max_new_tokens: int, int8: bool = False, int4: bool = False
) -> str:
    """Greedy continuation of ``prompt`` by an exported model, in ONNX Runtime.

    Raises:
        BadInputError: ``folder`` holds no export (or no int8/int4 graph when asked for one), or
            the prompt and ``max_new_tokens`` exceed the model's context.
    """
    import torch

    from compress.compat import load_tokenizer
    from exporters.onnx.context import check_fits, config_context

    folder = Path(folder)
    tag = "int4" if int4 else "int8" if int8 else None
    file_name = quantized_file(tag) if tag else MODEL_FILE
    if not (folder / file_name).is_file():
        hints = {
            "int8": "run compress export onnx DIR --quantize int8 (or int8-weights)",
            "int4": "run compress export onnx DIR --quantize int4",
            None: "run compress export onnx",
        }
        raise BadInputError(f"{folder} has no {file_name}: {hints[tag]} first")
    tokenizer = load_tokenizer(folder)
    inputs = tokenizer(prompt, return_tensors="pt", return_token_type_ids=False)
    check_fits(inputs["input_ids"].shape[1], max_new_tokens, config_context(folder))
    model = load_ort(folder, file_name)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=_pad_token_id(tokenizer),
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def _check_paths(folder: Path, output: Path, overwrite: bool) -> None:
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} has no config.json: point to a saved model folder")
    if output == folder or folder.is_relative_to(output):
        raise BadInputError(f"--output {output} would replace the model folder; pick another path")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise BadInputError(f"--output {output} exists and is not empty; pass --overwrite")


def _pad_token_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _relative_to(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def _parity_message(parity: dict, output: Path) -> str:
    tokens = "same greedy tokens" if parity["tokens_equal"] else "different greedy tokens"
    if parity.get("quantized"):
        worst, what = parity["mean_abs_logit_diff"], "int4 mean |logit diff|"
    else:
        worst = max(parity["max_abs_logit_diff"], parity["max_abs_decode_logit_diff"])
        what = "max |logit diff|"
    return (
        f"ONNX export disagrees with PyTorch: {what} {worst:.3g} "
        f"(limit {parity['atol']:g}), {tokens}; marked failed in {output / EXPORT_REPORT}"
    )
