"""Build, write and check a model folder's README.md from its records.

The card is rendered with a Jinja template of our own (``templates/model_card.md.j2``); its
front matter comes from ``huggingface_hub``'s :class:`ModelCardData` with one
:class:`EvalResult` per measured result, so the Hub's ``model-index`` parser reads it. The body
states only what :mod:`cards.facts` takes from the records.

``check_card`` validates offline: the front matter parses, the fields the Hub needs are there,
``base_model`` is a valid repo id, and the ``model-index`` results equal the ones the records give
now (a card edited by hand or left stale after a new evaluation is caught).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.io import write_text_atomic
from compress.core.report import read_report, sparsity_by_type

README = "README.md"
TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "model_card.md.j2"
EVAL_TASKS = "eval_tasks.json"
EVAL_TASKS_DENSE = "eval_tasks_dense.json"  # the base model's, from compress eval tasks --dense
EXPORT_REPORT = "export_report.json"
DEFAULT_ONNX = "onnx"


@dataclass
class Records:
    """Everything a card may state, as read from disk."""

    report: dict
    eval_tasks: dict | None
    export: dict | None
    onnx_path: str | None  # the export folder, relative to the model folder when inside it
    dense_tasks: dict | None = None  # the base model's eval_tasks record, when measured
    genai: dict | None = None  # an onnxruntime-genai build's export_report.json
    genai_path: str | None = None
    weights_bytes: int = 0  # the folder's own safetensors files, on disk


def load_records(folder: Path) -> Records:
    """report.json, plus the task records (this model's, the dense one's), the ONNX export and
    onnxruntime-genai build reports when they exist, and the bytes of the folder's weights."""
    folder = Path(folder)
    report = read_report(folder)
    eval_tasks, dense = (_optional_json(folder / name) for name in (EVAL_TASKS, EVAL_TASKS_DENSE))
    exports = report.get("export", {})
    onnx_path, export = _shipped_export(folder, exports.get("onnx") or DEFAULT_ONNX)
    genai_path, genai = _shipped_export(folder, exports.get("onnx_genai"))
    weights = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    return Records(report, eval_tasks, export, onnx_path, dense, genai, genai_path, weights)


def _shipped_export(folder: Path, path: str | None) -> tuple[str | None, dict | None]:
    """An export folder's path and report, when it lies inside ``folder`` (an absolute path is
    outside: not shipped with the model)."""
    if path is None or Path(path).is_absolute() or not (folder / path / EXPORT_REPORT).is_file():
        return None, None
    return path, json.loads((folder / path / EXPORT_REPORT).read_text())


def _optional_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def eval_results(records: Records) -> list:
    """One ``EvalResult`` per measured result of this model (the dense baseline is not one)."""
    from huggingface_hub import EvalResult

    from cards.facts import DATASET_IDS, perplexity_row, quantized_graphs, task_rows

    results = []
    ppl = perplexity_row(records.report.get("evaluation", {}))

    def perplexity(value: float, name: str, dataset: str, split: str) -> EvalResult:
        return EvalResult(
            task_type="text-generation",
            task_name="Language modeling",
            dataset_type=DATASET_IDS.get(dataset, dataset),
            dataset_name=dataset,
            dataset_split=split,
            metric_type="perplexity",
            metric_name=name,
            metric_value=value,
        )

    if ppl:
        name = f"perplexity ({ppl['windows']} x {ppl['seqlen']} tokens)"
        results.append(perplexity(ppl["after"], name, ppl["dataset"], ppl["split"]))
    for tag, quantized in quantized_graphs(records.export):
        p = quantized["perplexity"]
        for variant in ("fp32", tag):
            name = f"perplexity, ONNX {variant} ({p['windows']} x {p['seqlen']} tokens)"
            results.append(perplexity(p[variant], name, p["dataset"], p["split"]))
    for task in task_rows(records.eval_tasks):
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Zero-shot",
                dataset_type=task["harness_task"],
                dataset_name=task["task"],
                metric_type="accuracy",
                metric_name=f"acc ({task['samples']} samples)",
                metric_value=task["acc"],
            )
        )
    return results


def card_data(records: Records, model_name: str):
    """The YAML front matter: base model, inherited license, tags, datasets, model-index."""
    from huggingface_hub import ModelCardData

    from cards.facts import dataset_ids, tags

    model = records.report["model"]
    return ModelCardData(
        model_name=model_name,
        base_model=model["base_model"],
        license=model.get("license"),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags(records.report, records.export),
        datasets=dataset_ids(records.report.get("calibration", {})) or None,
        eval_results=eval_results(records) or None,
    )


def render_card(folder: Path, repo_id: str | None = None, published_as: Path | None = None):
    """The model card of ``folder`` as a ``huggingface_hub.ModelCard`` (not written).

    Args:
        repo_id: the Hub repo the card will live in (used in the loading snippets); None uses
            the folder path.
        published_as: the folder ``folder`` becomes once published, when it is a staging
            folder; the card names the model by it, never by the staging folder.
    """
    import jinja2
    from huggingface_hub import ModelCard

    from cards.facts import (
        FORMATS,
        calibration_facts,
        deployment,
        pct_targets,
        perplexity_row,
        quantized_graphs,
        reconstruction,
        reproduce_command,
        sharpness_aware,
        task_comparison,
        task_rows,
    )

    folder = Path(folder)
    records = load_records(folder)
    report = records.report
    final = Path(published_as or folder)
    model_name = (repo_id or final.resolve().name).split("/")[-1]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(FORMATS, pct_targets=pct_targets)
    text = env.get_template(TEMPLATE).render(
        card_data=card_data(records, model_name).to_yaml(),
        model_name=model_name,
        base_model=report["model"]["base_model"],
        license=report["model"].get("license"),
        summary=report["summary"],
        recipe={"skip": [], **report["recipe"]},
        reconstruction=reconstruction(report["recipe"]),
        sam=sharpness_aware(report["recipe"]),
        layers=report["layers"],
        layer_rows=sparsity_by_type(report["layers"]),
        block_rows=[
            b["sparsity"] | {"index": b["index"]}
            for b in report.get("blocks", [])
            if "sparsity" in b
        ],
        calibration=calibration_facts(report.get("calibration", {})),
        ppl=perplexity_row(report.get("evaluation", {})),
        tasks=task_rows(records.eval_tasks),
        eval_tasks=records.eval_tasks,
        task_table=task_comparison(records.eval_tasks, records.dense_tasks),
        task_record=records.eval_tasks or records.dense_tasks,
        dense_tasks=records.dense_tasks,
        export=records.export,
        onnx_path=records.onnx_path,
        quantized=quantized_graphs(records.export),
        genai=records.genai,
        genai_path=records.genai_path,
        weights_bytes=records.weights_bytes,
        repo=repo_id or str(final),
        deploy=deployment(report, repo_id or str(final)),
        command=reproduce_command(report),
    )
    return ModelCard(text)


def write_card(folder: Path, repo_id: str | None = None, published_as: Path | None = None) -> Path:
    """Render the card (see :func:`render_card`) and write ``folder/README.md`` atomically;
    return its path."""
    path = Path(folder) / README
    text = str(render_card(folder, repo_id, published_as))
    write_text_atomic(path, text)
    return path


def check_card(folder: Path) -> list[str]:
    """Problems with ``folder/README.md``'s metadata; an empty list means it is valid."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(folder) / README
    if not path.is_file():
        return [f"{path} does not exist: run compress card {folder}"]
    if not REGEX_YAML_BLOCK.search(path.read_text()):
        return [f"{path} has no YAML front matter between --- lines"]
    try:
        data = ModelCard.load(path).data
    except Exception as exc:  # noqa: BLE001  (yaml, model-index and key errors all mean "broken")
        return [f"{path} front matter does not parse: {type(exc).__name__}: {exc}"]
    problems = []
    for key in ("license", "base_model", "pipeline_tag", "tags"):
        if not getattr(data, key, None):
            problems.append(f"front matter has no {key}")
    try:
        validate_repo_id(str(data.base_model))
    except HFValidationError:
        problems.append(f"base_model {data.base_model!r} is not a Hub repo id")
    expected = [_result_key(r) for r in eval_results(load_records(folder))]
    stated = [_result_key(r) for r in (data.eval_results or [])]
    if stated != expected:
        problems.append(
            f"model-index states {stated} but the records give {expected}: run compress card {folder}"
        )
    return problems


def _result_key(result) -> tuple:
    return (result.dataset_name, result.dataset_split, result.metric_type, result.metric_value)


def require_valid(folder: Path) -> None:
    """Raise when :func:`check_card` finds problems.

    Raises:
        BadInputError: listing every problem on one line.
    """
    problems = check_card(folder)
    if problems:
        raise BadInputError(f"{Path(folder) / README}: " + "; ".join(problems))
