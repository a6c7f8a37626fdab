"""report.json: the single record of what was done and measured, and its schema.

Every later stage (evaluators, cards, exporters, the CLI summary) reads this file and adds its
own section through :func:`update_report`; nothing re-measures what is recorded here.

The schema is the :class:`Report` TypedDict below (``format`` = :data:`REPORT_FORMAT`), one
TypedDict per section, and each section (or entry of one) is built by one function here, so each
key is spelt once: :func:`layer_entry` (``layers``, counted in the final saved weights),
:func:`block_entry` (``blocks``), :func:`summary_section`, :func:`perplexity_section`
(``evaluation.perplexity``, also an artefact's ``perplexity``), :func:`tasks_section`
(``evaluation.tasks``), :func:`sharpness_section` (``evaluation.sharpness``),
:func:`artifact_record` (one entry of ``artifacts``: every shipped artefact, whatever its format)
and :func:`finetune_section`. :func:`check_report` validates a report against the schema, and
every writer validates what it writes: :func:`write_report` the whole report,
:func:`update_report` the section it sets (an unknown or mistyped key raises
:class:`ReportSchemaError`, a bug). The types are declared here, in the lowest layer, so that
every reader and writer checks against the same complete schema whichever stages it imported;
each stage builds its own section beside its code (``exporters.compressed.deploy_record``,
``exporters.onnx.onnx_artifact``, ``exporters.bnb``, ``evaluators.sharpness``) from these types.

Reports written before ``artifacts`` existed (with ``deploy``, ``export`` or ``quantization``)
are read as if written now: :func:`upgrade_report` moves those sections into ``artifacts``.
"""

# no ``from __future__ import annotations``: TypedDict reads NotRequired only from real types
import json
import math
import platform
import types
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import (
    Any,
    NotRequired,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic

REPORT_FORMAT = "compress.report/1"
REPORT_NAME = "report.json"
RECIPE_NAME = "recipe.json"


class ReportSchemaError(ValueError):
    """A writer produced a report outside the schema. A bug, not a user error: not a
    :class:`~compress.core.errors.CompressError`, so the CLI keeps its traceback."""


def read_report(folder: Path) -> dict:
    """Load ``folder/report.json`` (an older report's sections moved where they are written
    now, see :func:`upgrade_report`), with a one-line error when it is missing or broken."""
    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        raise BadInputError(
            f"{folder} has no {REPORT_NAME}: point to a folder written by compress prune"
        )
    try:
        return upgrade_report(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc


def write_report(folder: Path, report: Mapping) -> None:
    """Save a whole report as ``folder/report.json`` once it conforms to :class:`Report`.

    Raises:
        ReportSchemaError: a key is missing, unknown or mistyped.
    """
    _require(check_report(report))
    write_json_atomic(Path(folder) / REPORT_NAME, report)


def update_report(folder: Path, key: str, value: Any) -> dict:
    """Set ``report[key] = value`` (dict values are merged one level deep) and save atomically,
    once what is written conforms to the schema (see :func:`check_section`).

    Raises:
        ReportSchemaError: ``key``, or a key inside ``value``, is unknown or mistyped.
    """
    _require(check_section(key, value))
    report = read_report(folder)
    if isinstance(value, dict) and isinstance(report.get(key), dict):
        report[key] = {**report[key], **value}
    else:
        report[key] = value
    write_json_atomic(Path(folder) / REPORT_NAME, report)
    return report


def record_artifact(folder: Path, record: "ArtifactRecord") -> dict:
    """File ``record`` under its format in the ``artifacts`` section of ``folder``'s report."""
    return update_report(folder, "artifacts", {record["format"]: record})


def _require(problems: list[str]) -> None:
    if problems:
        raise ReportSchemaError("report outside its schema: " + "; ".join(problems))


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the result."""
    versions = {"python": platform.python_version()}
    for name in ("compress", "torch", "transformers", "accelerate", "optimum-onnx", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the schema ---------------------------------------------------------------------------------
class ModelSection(TypedDict):
    source: str
    base_model: str | None
    license: str | None
    model_type: str
    parameters: int
    dtype: str


class CalibrationSource(TypedDict):
    source: str
    split: str
    kind: str  # "real" | "self-generated"
    nsamples: int
    seqlen: int
    tokens: int
    seed: int
    available_tokens: int
    # self-generated by this run: texts, added, draws, rejected, tokens, seconds and the rates
    # texts_per_second (accepted), tokens_per_second, rejection_rate
    generation: NotRequired[dict[str, float]]


class CalibrationSection(TypedDict):
    sources: list[CalibrationSource]
    stats_from: str
    holdout: CalibrationSource | None
    processes: int


class LayerCounts(TypedDict):
    sparsity: float
    zeros: int


class LayerEntry(LayerCounts):
    shape: list[int]
    target_sparsity: float
    numel: int
    seconds: float
    # quantized runs: ||W_q - W|| / ||W|| of the rounding step (None: rounded in the pruner)
    quant_error: NotRequired[float | None]


class BlockErrors(TypedDict):
    before_reconstruction: dict[str, float | None]  # per stream: calibration, holdout
    after_reconstruction: dict[str, float | None]
    closed: NotRequired[dict[str, float]]  # (before - after) / before, per stream
    reference: str


class BlockSparsity(TypedDict):
    profile: str  # uniform | owl
    target: float  # the block's target (parameter-weighted over its layers)
    sparsity: float  # measured over the block's pruned layers
    zeros: int
    numel: int
    outlier_ratio: NotRequired[float]  # owl
    planned: NotRequired[float]  # errors: the solve's share, before carrying rounding
    candidates: NotRequired[list[list[float]]]  # errors: the first pass's (sparsity, error)


class BlockEntry(TypedDict):
    index: int
    sparsity: NotRequired[BlockSparsity]
    errors: NotRequired[BlockErrors]
    reconstruction: NotRequired[list[dict]]  # one entry per trained window
    passes: NotRequired[int]  # forwards over the calibration set: 1 with --one-pass, else 2
    seconds: float
    peak_accelerator_bytes: int | None


class SummarySection(TypedDict):
    method: str
    pattern: str
    target_sparsity: float
    sparsity: float  # over the pruned layers
    model_sparsity: float  # over all parameters
    prune_seconds: float
    seconds: float
    peak_rss_bytes: int | None
    peak_accelerator_bytes: int | None
    device: str


class EstimateSuggestion(TypedDict):
    nsamples: int
    seqlen: int
    seconds: float
    fits: bool  # under an hour (False: the smallest settings tried, still over)


class EstimateSection(TypedDict):
    """The plan made before pruning (compress/engine/estimate.py), beside ``summary``'s actual
    ``seconds`` and ``prune_seconds``."""

    seconds: float  # the whole run, loading to saving
    prune_seconds: float
    forward_seconds: float  # the timed forward of block 0
    forward_shape: list[int]  # its [sequences, tokens each]
    flops_per_second: float
    suggestion: EstimateSuggestion | None  # calibration under an hour; None: already under


class PerplexityProtocol(TypedDict):
    dataset: str
    split: str
    protocol: NotRequired[dict]  # how the text was joined and cut (compress.data.calibration)
    seqlen: int
    windows: int
    tokens: int


class PerplexitySection(PerplexityProtocol):
    before: float | None  # the model before this stage (dense, or not quantized); None: unknown
    after: float


class PerplexityChange(TypedDict):
    change: float | None
    relative_change: float | None


class TasksSection(TypedDict):
    """An ``eval_tasks.json`` record without its ``format`` and ``model``."""

    harness: dict
    source: str
    data: str
    settings: dict
    tasks: dict[str, dict]
    summary: dict
    created: str
    updated: NotRequired[str]


class SharpnessSection(TypedDict):
    """``compress eval sharpness`` (:mod:`evaluators.sharpness`): the loss's top Hessian
    eigenvalue and trace moments over the unpruned weights, on ``data``."""

    dimension: int
    batches: int
    lambda_max: dict  # value, iterations, converged, ... (evaluators.sharpness.top_eigenvalue)
    trace_moments: dict[str, dict]  # per power k: the Hutchinson estimate's summary
    hessian_vector_products: int
    seconds: float
    seed: int
    data: CalibrationSource
    pruned_weights_excluded: int


class EvaluationSection(TypedDict, total=False):
    perplexity: PerplexitySection
    tasks: TasksSection
    sharpness: SharpnessSection


class LoadSnippet(TypedDict):
    runtime: str  # what runs the code, with what it needs installed
    code: str  # Python; ``{REPO}`` stands for the repo id or folder


class ArtifactRecord(TypedDict):
    """One shipped artefact, whatever wrote it (export onnx, export compressed, --save-format
    compressed, export bnb), filed in ``artifacts`` under its ``format``."""

    format: str  # "onnx", "onnx-genai", "compressed-tensors sparse-24-bitmask", "bnb-nf4", ...
    path: str  # its folder: relative to the model folder ("." its own weights), or absolute
    files: dict[str, int]  # its files, bytes each
    bytes: int  # all of them
    parity: dict | None  # its check against the PyTorch model (the exporter's record); None: none
    perplexity: PerplexitySection | None  # before: the reference it was measured against
    load: list[LoadSnippet]  # how to load it
    details: dict  # what only this format records (opset, scheme, bytes beside the dense ...)


class FinetuneHeldout(TypedDict):
    before: dict | None  # {step, loss, perplexity}
    after: dict | None


class FinetuneSparsity(TypedDict):
    masked_parameters: int
    zeros_before: int
    zeros_after: int


class FinetuneSection(TypedDict):
    config: dict
    tokens: int
    train_data: dict
    heldout_data: dict | None
    heldout: FinetuneHeldout
    sparsity: FinetuneSparsity
    train_seconds: float
    tokens_per_second: float
    device: str
    autocast: str | None
    resumed_from_step: int | None
    history: dict
    created: str
    source_evaluation: NotRequired[EvaluationSection]  # the model before fine-tuning


class HubSection(TypedDict):
    repo_id: str
    commit: str  # the commit's URL
    url: str  # the repository's page


class QuantizationSection(TypedDict):
    """The grid a quantized run rounded its kept weights to, and what that rounding changed."""

    grid: str  # int4, int8
    bits: int
    group_size: int  # input columns per scale (0: one per output row)
    scale_dtype: str
    quantizer: str  # gptq, rtn
    joint: bool  # rounded inside SparseGPT's pruning loop
    layers: int
    # ||W_q - W|| / ||W|| of the rounding step over the layers (None: joint)
    mean_error: float | None
    max_error: float | None
    file: str  # the record beside the weights (scales and grid)


class Report(TypedDict):
    format: str
    model: ModelSection
    recipe: dict
    calibration: CalibrationSection
    layers: dict[str, LayerEntry]
    blocks: list[BlockEntry]
    summary: SummarySection
    evaluation: EvaluationSection
    versions: dict[str, str]
    created: str
    command: NotRequired[str | list[str]]
    artifacts: NotRequired[dict[str, ArtifactRecord]]
    finetune: NotRequired[FinetuneSection]
    hub: NotRequired[HubSection]
    estimate: NotRequired[EstimateSection]
    quantization: NotRequired[QuantizationSection]


# -- one builder per section ----------------------------------------------------------------------
def layer_counts(zeros: int, numel: int) -> LayerCounts:
    """A layer's ``sparsity`` and ``zeros``: what is counted again after reconstruction."""
    return {"sparsity": zeros / numel, "zeros": zeros}


def layer_entry(
    shape: Sequence[int], target_sparsity: float, zeros: int, seconds: float
) -> LayerEntry:
    """One pruned layer: its weight's shape, target and measured sparsity, pruning time."""
    numel = math.prod(shape)
    return {
        "shape": list(shape),
        "target_sparsity": target_sparsity,
        **layer_counts(zeros, numel),
        "numel": numel,
        "seconds": round(seconds, 4),
    }


def block_errors(before: dict[str, float | None], after: dict[str, float | None]) -> BlockErrors:
    """A block's normalized errors per stream against the dense model, around reconstruction."""
    closed = {
        name: (before[name] - after[name]) / before[name]
        for name in before
        if before[name] and after.get(name) is not None
    }
    return {
        "before_reconstruction": before,
        "after_reconstruction": after,
        "closed": closed,  # share of the block's error reconstruction removed, per stream
        "reference": "dense model activations",
    }


def block_sparsity(
    profile: str,
    layers: Collection[LayerEntry],
    outlier_ratio: float | None = None,
    planned: float | None = None,
    candidates: Sequence[tuple[float, float]] | None = None,
) -> BlockSparsity:
    """The sparsity a block was given and the one measured, over its pruned ``layers``, with
    what the profile decided it from (OWL's ratio; the errors solve's share and curve)."""
    numel = sum(layer["numel"] for layer in layers)
    zeros = sum(layer["zeros"] for layer in layers)
    targets = {layer["target_sparsity"] for layer in layers}
    target = (
        targets.pop()
        if len(targets) == 1
        else sum(layer["target_sparsity"] * layer["numel"] for layer in layers) / (numel or 1)
    )
    entry: BlockSparsity = {
        "profile": profile,
        "target": target,
        "sparsity": zeros / numel if numel else 0.0,
        "zeros": zeros,
        "numel": numel,
    }
    if outlier_ratio is not None:
        entry["outlier_ratio"] = outlier_ratio
    if planned is not None:
        entry["planned"] = planned
    if candidates is not None:
        entry["candidates"] = [list(point) for point in candidates]
    return entry


def block_entry(
    index: int,
    seconds: float,
    peak_accelerator_bytes: int | None,
    errors: BlockErrors | None = None,
    reconstruction: list[dict] | None = None,
    sparsity: BlockSparsity | None = None,
    passes: int | None = None,
) -> BlockEntry:
    """One decoder block's step; ``errors`` and ``reconstruction`` only when measured/trained."""
    entry: dict = {"index": index}
    if passes is not None:
        entry["passes"] = passes
    if sparsity is not None:
        entry["sparsity"] = sparsity
    if errors is not None:
        entry["errors"] = errors
    if reconstruction is not None:
        entry["reconstruction"] = reconstruction
    return {**entry, "seconds": seconds, "peak_accelerator_bytes": peak_accelerator_bytes}


def pruned_sparsity(layers: Collection[LayerEntry]) -> float:
    """Zeros over weights of ``layers`` together."""
    numel = sum(layer["numel"] for layer in layers)
    return sum(layer["zeros"] for layer in layers) / numel if numel else 0.0


def quantization_section(
    grid: str,
    bits: int,
    group_size: int,
    quantizer: str,
    joint: bool,
    layers: Mapping[str, LayerEntry],
    file: str,
) -> QuantizationSection:
    """report.json's ``quantization``: the grid and the rounding's relative weight errors."""
    errors = [e for e in (layer.get("quant_error") for layer in layers.values()) if e is not None]
    return {
        "grid": grid,
        "bits": bits,
        "group_size": group_size,
        "scale_dtype": "float16",
        "quantizer": quantizer,
        "joint": joint,
        "layers": sum(1 for layer in layers.values() if "quant_error" in layer),
        "mean_error": sum(errors) / len(errors) if errors else None,
        "max_error": max(errors) if errors else None,
        "file": file,
    }


def summary_section(
    *,
    method: str,
    pattern: str,
    target_sparsity: float,
    layers: Mapping[str, LayerEntry],
    blocks: Sequence[BlockEntry],
    model_sparsity: float,
    prune_seconds: float,
    seconds: float,
    peak_rss_bytes: int | None,
    device: str,
) -> SummarySection:
    """The run at a glance: sparsity over the pruned layers (from ``layers``) and the largest
    per-block accelerator peak (from ``blocks``; None without an accelerator)."""
    peaks = [block["peak_accelerator_bytes"] or 0 for block in blocks]
    return {
        "method": method,
        "pattern": pattern,
        "target_sparsity": target_sparsity,
        "sparsity": pruned_sparsity(layers.values()),
        "model_sparsity": model_sparsity,
        "prune_seconds": round(prune_seconds, 2),
        "seconds": round(seconds, 2),
        "peak_rss_bytes": peak_rss_bytes,
        "peak_accelerator_bytes": max(peaks, default=0) or None,
        "device": device,
    }


def estimate_section(
    *,
    seconds: float,
    prune_seconds: float,
    forward_seconds: float,
    forward_shape: tuple[int, int],
    flops_per_second: float,
    suggestion: EstimateSuggestion | None,
) -> EstimateSection:
    """The run's estimate, made before pruning from one timed forward (three significant
    figures: a tiny model's pruning is estimated in hundredths of a second)."""
    return {
        "seconds": float(f"{seconds:.3g}"),
        "prune_seconds": float(f"{prune_seconds:.3g}"),
        "forward_seconds": round(forward_seconds, 4),
        "forward_shape": list(forward_shape),
        "flops_per_second": float(f"{flops_per_second:.4g}"),
        "suggestion": suggestion,
    }


def perplexity_protocol(
    dataset: str,
    split: str,
    seqlen: int,
    windows: int,
    tokens: int,
    protocol: dict | None = None,
) -> PerplexityProtocol:
    """What a perplexity was measured on: text, split, joining protocol, windows."""
    section: dict = {"dataset": dataset, "split": split}
    if protocol is not None:
        section["protocol"] = protocol
    return {**section, "seqlen": seqlen, "windows": windows, "tokens": tokens}


def perplexity_section(measured: Mapping[str, Any], before: float | None) -> PerplexitySection:
    """``measured`` (a result of :func:`evaluators.perplexity.perplexity_of_text`) as a report
    section, beside ``before``: the model before this stage, same protocol (None: unknown)."""
    keys = ("dataset", "split", "seqlen", "windows", "tokens", "protocol")
    protocol = perplexity_protocol(**{key: measured[key] for key in keys if key in measured})
    return {**protocol, "before": before, "after": measured["perplexity"]}


def perplexity_change(before: float | None, after: float) -> PerplexityChange:
    """``after - before`` and that relative to ``before`` (None when ``before`` is unknown)."""
    if before is None:
        return {"change": None, "relative_change": None}
    return {"change": after - before, "relative_change": (after - before) / before}


def same_protocol(recorded: Mapping, dataset: str, seqlen: int, windows: int | None) -> bool:
    """Whether a recorded perplexity section was measured on ``dataset`` in ``seqlen``-token
    windows, ``windows`` of them (None: any number)."""
    if (recorded.get("dataset"), recorded.get("seqlen")) != (dataset, seqlen):
        return False
    return windows is None or recorded.get("windows") == windows


def perplexity_label(section: Mapping) -> str:
    """``wikipedia (40x512)``: the text and windows x tokens a perplexity is over."""
    return f"{section['dataset']} ({section['windows']}x{section['seqlen']})"


def tasks_section(record: Mapping[str, Any]) -> TasksSection:
    """The report's copy of an ``eval_tasks.json`` record (its format and model left out)."""
    keys = TasksSection.__required_keys__ | TasksSection.__optional_keys__
    return {key: value for key, value in record.items() if key in keys}  # type: ignore[return-value]


def evaluation_section(
    perplexity: PerplexitySection | None = None, tasks: TasksSection | None = None
) -> EvaluationSection:
    """The measured results; what was not measured is left out."""
    section: EvaluationSection = {}
    if perplexity is not None:
        section["perplexity"] = perplexity
    if tasks is not None:
        section["tasks"] = tasks
    return section


def sharpness_section(
    measured: Mapping[str, Any], data: CalibrationSource, excluded: int
) -> SharpnessSection:
    """``measured`` (a result of :func:`evaluators.sharpness.lm_sharpness`) with the windows it
    was measured on and the count of pruned weights left out of the Hessian."""
    keys = SharpnessSection.__required_keys__ - {"data", "pruned_weights_excluded"}
    section = {key: measured[key] for key in measured if key in keys}
    return {**section, "data": data, "pruned_weights_excluded": excluded}  # type: ignore[return-value]


def artifact_record(
    *,
    format: str,
    path: str,
    files: Mapping[str, int],
    load: Sequence[LoadSnippet],
    parity: dict | None = None,
    perplexity: PerplexitySection | None = None,
    details: dict | None = None,
) -> ArtifactRecord:
    """A shipped artefact: its ``files`` (bytes each; ``bytes`` is their sum), its check and
    perplexity against the reference when measured, and how to load it."""
    return {
        "format": format,
        "path": path,
        "files": dict(files),
        "bytes": sum(files.values()),
        "parity": parity,
        "perplexity": perplexity,
        "load": list(load),
        "details": details or {},
    }


def upgrade_report(report: dict) -> dict:
    """``report`` with the sections written before ``artifacts`` existed moved into it (in
    place): ``deploy.FORMAT`` -> ``artifacts.FORMAT``, ``export.onnx`` (``onnx_files``) ->
    ``artifacts.onnx``, ``export.onnx_genai`` (``onnx_genai_files``) -> ``artifacts.onnx-genai``,
    ``quantization`` with a ``scheme`` (a bitsandbytes deploy's, before a quantized run's
    section took the name) -> ``artifacts.SCHEME``. What they did not record (a deploy record's file
    list, an ONNX export's loading code and parity, which stay in its export_report.json) is
    left empty."""
    artifacts = report.get("artifacts", {})
    for name, old in (report.pop("deploy", None) or {}).items():
        keep = ("format", "path", "bytes", "load", "round_trip")
        artifacts[name] = {
            **artifact_record(format=name, path=old.get("path", "."), files={}, load=old["load"]),
            "bytes": old["bytes"],
            "parity": {"round_trip": old["round_trip"]} if old.get("round_trip") else None,
            "details": {key: value for key, value in old.items() if key not in keep},
        }
    export = report.pop("export", None) or {}
    for key, name in (("onnx", "onnx"), ("onnx_genai", "onnx-genai")):
        if export.get(key):
            files = export.get(f"{key}_files") or {}
            artifacts[name] = artifact_record(format=name, path=export[key], files=files, load=[])
    old = report.get("quantization")
    if old and "scheme" in old:
        del report["quantization"]
        scheme = old["scheme"]
        details = {key: old[key] for key in ("description", "source", "device", "source_bytes")}
        artifacts[scheme] = {
            **artifact_record(format=scheme, path=".", files={}, load=[]),
            "bytes": old["bytes"],
            "perplexity": old["perplexity"],
            "details": {**details, "dequantized": old["dequantized"]},
        }
    if artifacts:
        report["artifacts"] = artifacts
    return report


def finetune_section(
    *,
    config: dict,
    tokens: int,
    train_data: dict,
    heldout_data: dict | None,
    heldout: Sequence[dict],
    masked_parameters: int,
    zeros_before: int,
    zeros_after: int,
    train_seconds: float,
    device: str,
    autocast: str | None,
    resumed_from_step: int | None,
    history: dict,
) -> FinetuneSection:
    """A fine-tuning run; ``heldout``: the held-out measurements in step order (may be empty)."""
    return {
        "config": config,
        "tokens": tokens,
        "train_data": train_data,
        "heldout_data": heldout_data,
        "heldout": {
            "before": heldout[0] if heldout else None,
            "after": heldout[-1] if heldout else None,
        },
        "sparsity": {
            "masked_parameters": masked_parameters,
            "zeros_before": zeros_before,
            "zeros_after": zeros_after,
        },
        "train_seconds": round(train_seconds, 3),
        "tokens_per_second": round(tokens / train_seconds, 1),
        "device": device,
        "autocast": autocast,
        "resumed_from_step": resumed_from_step,
        "history": history,
        "created": now_iso(),
    }


def move_source_evaluation(section: FinetuneSection, report: dict) -> FinetuneSection:
    """The source report's ``evaluation`` measured the model before fine-tuning: it moves out of
    ``report`` into the ``finetune`` section (evaluators fill a fresh one for the new model)."""
    if "evaluation" not in report:
        return section
    return {**section, "source_evaluation": report.pop("evaluation")}


def hub_section(repo_id: str, commit: str) -> HubSection:
    """``commit``: the URL huggingface_hub returns for the upload's commit."""
    return {"repo_id": repo_id, "commit": commit, "url": commit.partition("/commit/")[0]}


# -- reading the layers section -----------------------------------------------------------------
def layer_type(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``self_attn.q_proj`` (drops the block prefix)."""
    parts = name.split(".")
    numbers = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[numbers[-1] + 1 :]) if numbers else parts[-1]


def sparsity_by_type(layers: Mapping[str, LayerEntry]) -> list[dict]:
    """Per layer type: layer count, targets, zeros/numel over all its layers, min and max."""
    groups: dict[str, list[LayerEntry]] = defaultdict(list)
    for name, layer in layers.items():
        groups[layer_type(name)].append(layer)
    return [
        {
            "type": kind,
            "layers": len(members),
            "target": sorted({m["target_sparsity"] for m in members}),
            "sparsity": pruned_sparsity(members),
            "min": min(m["sparsity"] for m in members),
            "max": max(m["sparsity"] for m in members),
            "zeros": sum(m["zeros"] for m in members),
            "numel": sum(m["numel"] for m in members),
        }
        for kind, members in groups.items()
    ]


def describe_targets(targets: Sequence[float], fmt: Callable[[float], str]) -> str:
    """A layer type's distinct targets in one table cell: each of them, or their span when
    there are more than three (a sparsity profile gives every block its own; the per-block
    table lists them)."""
    if len(targets) <= 3:
        return ", ".join(fmt(t) for t in targets)
    return f"{fmt(min(targets))} to {fmt(max(targets))}"


# -- validation --------------------------------------------------------------------------------
def check_report(report: Mapping) -> list[str]:
    """Where ``report`` departs from :class:`Report`: missing, unknown or mistyped keys, each
    as ``path: problem``; an empty list means it conforms."""
    return check_value(report, Report, "report")


def check_section(key: str, value: Any) -> list[str]:
    """Problems of ``value`` written as ``report[key]``: a dict written into a section is merged
    one level deep (see :func:`update_report`), so each of its keys is checked against that
    section's field; any other value against the section's type."""
    fields = get_type_hints(Report)
    if key not in fields:
        return [f"report.{key}: not in the schema"]
    hint, path = fields[key], f"report.{key}"
    if is_typeddict(hint) and isinstance(value, dict):
        inner = get_type_hints(hint)
        return [
            problem
            for name, item in value.items()
            for problem in (
                check_value(item, inner[name], f"{path}.{name}")
                if name in inner
                else [f"{path}.{name}: not in the schema"]
            )
        ]
    return check_value(value, hint, path)


def check_value(value: Any, hint: Any, path: str) -> list[str]:
    """Problems of ``value`` against the type ``hint`` (TypedDicts, unions, lists, dicts and
    plain JSON types)."""
    if hint is Any:
        return []
    if is_typeddict(hint):
        return _check_typeddict(value, hint, path)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        results = [check_value(value, arg, path) for arg in args]
        return [] if any(not problems for problems in results) else min(results, key=len)
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [
            p for i, item in enumerate(value) for p in check_value(item, args[0], f"{path}[{i}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        return [p for k, item in value.items() for p in check_value(item, args[1], f"{path}.{k}")]
    return [] if _is_instance(value, hint) else [f"{path}: expected {_name(hint)}, got {value!r}"]


def _check_typeddict(value: Any, hint: type, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object, got {type(value).__name__}"]
    fields = get_type_hints(hint)
    problems = [f"{path}.{key}: missing" for key in hint.__required_keys__ if key not in value]
    problems += [f"{path}.{key}: not in the schema" for key in value if key not in fields]
    for key, item in value.items():
        if key in fields:
            problems += check_value(item, fields[key], f"{path}.{key}")
    return problems


def _is_instance(value: Any, hint: Any) -> bool:
    if hint is None or hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _name(hint: Any) -> str:
    return "null" if hint in (None, type(None)) else getattr(hint, "__name__", str(hint))
