"""``compress eval all``: perplexity and zero-shot tasks for a pruned folder, into report.json.

Perplexity follows the folder's recipe (dataset, window length, window count) unless told
otherwise. When report.json already holds the pruned model's perplexity and no other protocol
is asked for, it is kept rather than measured again: the report is the record, and a second
measurement of the same thing would only be a chance to disagree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compress.core.report import (
    PerplexitySection,
    evaluation_section,
    perplexity_section,
    read_report,
    same_protocol,
    tasks_section,
    update_report,
)
from compress.model.loading import LoadedModel
from evaluators.tasks.registry import Source
from evaluators.tasks.runner import RESULTS_NAME, evaluate_tasks, silent
from evaluators.tasks.settings import PerplexityRequest, TaskSettings


def _protocol(report: dict, request: PerplexityRequest) -> tuple[str, int, int | None]:
    recipe = report.get("recipe") or {}
    evaluation = recipe.get("evaluation") or {}
    dataset = request.dataset or evaluation.get("dataset") or "wikipedia"
    calibration_seqlen = (recipe.get("calibration") or {}).get("seqlen")
    seqlen = request.seqlen or evaluation.get("seqlen") or calibration_seqlen or 2048
    windows = request.max_windows
    if windows is None:
        windows = evaluation.get("max_windows", 40)
    return dataset, seqlen, windows or None


def measure_perplexity(
    loaded: LoadedModel, report: dict, request: PerplexityRequest, log: Callable[[str], None]
) -> PerplexitySection:
    """report.json's ``evaluation.perplexity`` for the loaded (pruned) model."""
    from compress.data.calibration import eval_text
    from compress.model.loading import check_seqlen
    from evaluators.perplexity import perplexity_of_text

    recorded = (report.get("evaluation") or {}).get("perplexity") or {}
    if recorded.get("after") is not None and request == PerplexityRequest():
        log("perplexity: recorded in report.json already, kept (pass --dataset/--seqlen to redo)")
        return recorded
    dataset, seqlen, max_windows = _protocol(report, request)
    check_seqlen(loaded, seqlen)
    log(f"perplexity on {dataset} (test split), windows of {seqlen} tokens")
    text = eval_text(dataset, "test")
    result = perplexity_of_text(
        loaded.model, loaded.tokenizer, text, seqlen, max_windows, progress=True
    )
    same = same_protocol(recorded, result["dataset"], result["seqlen"], result["windows"])
    return perplexity_section(result, recorded.get("before") if same else None)  # dense, same way


def evaluate_folder(
    folder: Path,
    loaded: LoadedModel,
    tasks: str,
    settings: TaskSettings,
    request: PerplexityRequest,
    source: Source = Source.auto,
    batch_size: int = 8,
    overwrite: bool = False,
    log: Callable[[str], None] = silent,
) -> dict:
    """Measure perplexity and tasks for ``folder``, merge them into its report; return both.

    Raises:
        BadInputError: no report.json in ``folder``, a bad task or setting.
    """
    report = read_report(folder)
    section = measure_perplexity(loaded, report, request, log)
    record = evaluate_tasks(
        loaded.model,
        loaded.tokenizer,
        tasks,
        Path(folder) / RESULTS_NAME,
        settings,
        source=source,
        model_name=str(Path(folder)),
        batch_size=batch_size,
        overwrite=overwrite,
        log=log,
    )
    update_report(folder, "evaluation", evaluation_section(section, tasks_section(record)))
    return {"perplexity": section, "tasks": record}
