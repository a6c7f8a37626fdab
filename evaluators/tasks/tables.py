"""Plain-text tables of task results: one model's scores, and models side by side.

Recovery (the compression papers' term) is a model's score as a percentage of the first
(dense) model's: ``100 · x / x_dense`` for accuracies, ``100 · ppl_dense / ppl`` for
perplexities, so 100 % means nothing was lost either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.report import REPORT_NAME
from evaluators.tasks.registry import describe_subset
from evaluators.tasks.runner import RESULTS_NAME

LOWER_IS_BETTER = ("perplexity",)


def _cell(value: float | None, stderr: float | None = None, scale: float = 100.0) -> str:
    if value is None:
        return "-"
    text = f"{value * scale:.2f}"
    return f"{text} ± {stderr * scale:.2f}" if stderr is not None else text


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def results_table(record: dict) -> str:
    """One model's tasks: items, acc and acc_norm (% ± stderr), perplexity where measured."""
    rows = []
    for name, entry in record["tasks"].items():
        ppl = entry.get("perplexity")
        rows.append(
            [
                name,
                entry["source"],
                describe_subset(entry.get("subset"), entry["samples"]),
                _cell(entry["acc"], entry["acc_stderr"]),
                _cell(entry["acc_norm"], entry["acc_norm_stderr"]),
                _cell(ppl, scale=1.0),
            ]
        )
    summary = record["summary"]
    if summary["mean_over"]:
        label = "mean (paper 7)" if summary["complete"] else f"mean ({len(summary['mean_over'])})"
        rows.append([label, "", "", _cell(summary["mean_acc"]), "", ""])
    return _render(["task", "source", "items", "acc %", "acc_norm %", "ppl"], rows)


def load_results(path: Path) -> dict[str, float]:
    """Flat metrics of one model from a folder (eval_tasks.json, report.json) or a JSON file.

    Keys are ``"<task> acc"``, ``"<task> acc_norm"``, ``"<task> perplexity"``, ``"mean acc"`` and
    ``"perplexity (<dataset>)"`` from report.json's evaluation section.

    Raises:
        BadInputError: the path holds neither file.
    """
    path = Path(path)
    task_file = path / RESULTS_NAME if path.is_dir() else path
    report_file = path / REPORT_NAME if path.is_dir() else None
    if not task_file.is_file() and not (report_file and report_file.is_file()):
        raise BadInputError(
            f"{path} has no {RESULTS_NAME} or {REPORT_NAME}; run compress eval tasks or all first"
        )
    metrics: dict[str, float] = {}
    if report_file and report_file.is_file():
        evaluation = json.loads(report_file.read_text()).get("evaluation", {})
        ppl = evaluation.get("perplexity") or {}
        if ppl.get("after") is not None:
            metrics[f"perplexity ({ppl.get('dataset', '?')})"] = ppl["after"]
        if not task_file.is_file() and "tasks" in evaluation:
            metrics.update(_task_metrics(evaluation["tasks"]))
    if task_file.is_file():
        metrics.update(_task_metrics(json.loads(task_file.read_text())))
    return metrics


def _task_record(path: Path) -> dict:
    """The task record of a folder (eval_tasks.json, else report.json's) or of a JSON file."""
    path = Path(path)
    if not path.is_dir():
        return json.loads(path.read_text())
    if (path / RESULTS_NAME).is_file():
        return json.loads((path / RESULTS_NAME).read_text())
    if (path / REPORT_NAME).is_file():
        return json.loads((path / REPORT_NAME).read_text()).get("evaluation", {}).get("tasks", {})
    return {}


def describe_items(path: Path) -> str:
    """Which documents a model's tasks were scored on, from its recorded settings."""
    settings = _task_record(path).get("settings") or {}
    if settings.get("sample") is not None:
        return f"random {settings['sample']} per task (seed {settings['seed']})"
    if settings.get("limit") is not None:
        return f"first {settings['limit']} per task"
    return "every item" if settings else "unrecorded"


def _task_metrics(record: dict) -> dict[str, float]:
    metrics = {}
    for name, entry in record.get("tasks", {}).items():
        for metric in ("acc", "acc_norm", "perplexity"):
            if entry.get(metric) is not None:
                metrics[f"{name} {metric}"] = entry[metric]
    if record.get("summary", {}).get("mean_acc") is not None:
        metrics["mean acc"] = record["summary"]["mean_acc"]
    return metrics


def recovery(metric: str, value: float, base: float) -> float | None:
    """``value`` as a percentage of ``base``, inverted for lower-is-better metrics."""
    lower = any(word in metric for word in LOWER_IS_BETTER)
    num, den = (base, value) if lower else (value, base)
    return 100.0 * num / den if den else None


def compare_table(models: dict[str, dict[str, float]]) -> str:
    """Metrics of several models side by side; every model after the first gets a recovery %."""
    labels = list(models)
    base = models[labels[0]]
    keys = list(dict.fromkeys(key for metrics in models.values() for key in metrics))
    header = ["metric", labels[0]]
    for label in labels[1:]:
        header += [label, "recovery %"]
    rows = []
    for key in keys:
        scale = 1.0 if "perplexity" in key else 100.0
        row = [key, _cell(base.get(key), scale=scale)]
        for label in labels[1:]:
            value = models[label].get(key)
            kept = recovery(key, value, base[key]) if value is not None and key in base else None
            row += [_cell(value, scale=scale), _cell(kept, scale=1.0)]
        rows.append(row)
    return _render(header, rows)
