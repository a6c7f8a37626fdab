"""Build, write and check a model folder's README.md from its records.

The card is rendered with a Jinja template of our own (``templates/model_card.md.j2``); its
front matter comes from ``huggingface_hub``'s :class:`ModelCardData` with one
:class:`EvalResult` per measured result, so the Hub's ``model-index`` parser reads it. The body
states only what :mod:`cards.facts` takes from the records.

``check_card`` validates offline: the front matter parses, the fields the Hub needs are there,
``base_model`` (written only for a Hub source) is a valid repo id, and the whole card, front matter
and body, is what rendering the records again gives (a figure edited by hand or a card left stale
after a new evaluation is caught). A render takes two arguments the records do not hold, the
model's name and the repo its loading snippets name; the check reads them back from the card's
heading and snippets, so a card passes wherever it was written for (a Hub repo, the folder under
another path).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import zip_longest
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
UNKNOWN_LICENSE = "other"  # the Hub's value for a license not on its list; the body says unknown
# Stand-ins for the render arguments, to find where the template puts them (see _stated).
NAME_MARK, REPO_MARK = "COMPRESS_CARD_NAME", "COMPRESS_CARD_REPO"


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
    artifacts = report.get("artifacts", {})
    onnx_path, export = _shipped_export(folder, artifacts.get("onnx", {}).get("path", DEFAULT_ONNX))
    genai_path, genai = _shipped_export(folder, artifacts.get("onnx-genai", {}).get("path"))
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
    """The YAML front matter: base model (a Hub source only), inherited license (``other`` when
    none is recorded), tags, datasets, model-index."""
    from huggingface_hub import ModelCardData

    from cards.facts import dataset_ids, hub_base_model, tags

    model = records.report["model"]
    return ModelCardData(
        model_name=model_name,
        base_model=hub_base_model(model),
        license=model.get("license") or UNKNOWN_LICENSE,
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
    from huggingface_hub import ModelCard

    final = Path(published_as or folder)
    model_name = (repo_id or final.resolve().name).split("/")[-1]
    return ModelCard(_render(load_records(folder), model_name, repo_id or str(final)))


def _render(records: Records, model_name: str, repo: str) -> str:
    """The card's text: ``model_name`` heads it, the loading snippets name ``repo``."""
    import jinja2

    from cards.facts import (
        FORMATS,
        calibration_facts,
        deployment,
        hub_base_model,
        pct_targets,
        perplexity_row,
        quantization,
        quantized_graphs,
        reconstruction,
        reproduce_command,
        sharpness_aware,
        task_comparison,
        task_rows,
    )

    report = records.report
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(FORMATS, pct_targets=pct_targets)
    return env.get_template(TEMPLATE).render(
        card_data=card_data(records, model_name).to_yaml(),
        model_name=model_name,
        base_model=report["model"]["base_model"] or report["model"]["source"],
        hub_base_model=hub_base_model(report["model"]),
        license=report["model"].get("license"),
        summary=report["summary"],
        recipe={"skip": [], **report["recipe"]},
        reconstruction=reconstruction(report["recipe"]),
        sam=sharpness_aware(report["recipe"]),
        quantization=quantization(report),
        quantization_grid=report.get("quantization", {}).get("grid"),
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
        repo=repo,
        deploy=deployment(report, repo),
        command=reproduce_command(report),
    )


def write_card(folder: Path, repo_id: str | None = None, published_as: Path | None = None) -> Path:
    """Render the card (see :func:`render_card`) and write ``folder/README.md`` atomically;
    return its path."""
    path = Path(folder) / README
    text = str(render_card(folder, repo_id, published_as))
    write_text_atomic(path, text)
    return path


def check_card(folder: Path) -> list[str]:
    """Problems with ``folder/README.md``; an empty list means it is valid and reads exactly as
    the records render it."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    path = Path(folder) / README
    if not path.is_file():
        return [f"{path} does not exist: run compress card {folder}"]
    text = path.read_text()
    if not REGEX_YAML_BLOCK.search(text):
        return [f"{path} has no YAML front matter between --- lines"]
    try:
        data = ModelCard.load(path).data
    except Exception as exc:  # noqa: BLE001  (yaml, model-index and key errors all mean "broken")
        return [f"{path} front matter does not parse: {type(exc).__name__}: {exc}"]
    problems = _metadata_problems(data)
    difference = _first_difference(text, _rerender(load_records(folder), text, Path(folder)))
    if difference:
        problems.append(f"{difference}: run compress card {folder} to render it again")
    return problems


def _metadata_problems(data) -> list[str]:
    """The fields the Hub needs that are missing, and a ``base_model`` that is no repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problems = [
        f"front matter has no {key}"
        for key in ("license", "pipeline_tag", "tags")
        if not getattr(data, key, None)
    ]
    if data.base_model is not None:
        try:
            validate_repo_id(str(data.base_model))
        except HFValidationError:
            problems.append(f"base_model {data.base_model!r} is not a Hub repo id")
    return problems


def _rerender(records: Records, text: str, folder: Path) -> str:
    """The card the records give, for the model name and repo ``text`` states (else the
    folder's name and path), as :func:`write_card` writes it."""
    from huggingface_hub import ModelCard

    marked = _body(_render(records, NAME_MARK, REPO_MARK))
    body = _body(text)
    name = _stated(marked, body, NAME_MARK) or folder.resolve().name
    repo = _stated(marked, body, REPO_MARK) or str(folder)
    return str(ModelCard(_render(records, name, repo)))


def _body(text: str) -> list[str]:
    """The lines after the front matter."""
    return text.partition("\n---\n")[2].splitlines()


def _stated(marked: list[str], card: list[str], mark: str) -> str | None:
    """The value ``card`` has where the template puts ``mark``: read from the first card line
    that matches a marked template line, with ``mark`` as the value (the same at each place)."""
    for line in (m for m in marked if mark in m):
        head, *rest = line.split(mark)
        value = re.escape(head) + "(?P<v>.+?)" + "(?P=v)".join(map(re.escape, rest))
        found = next(filter(None, map(re.compile(value).fullmatch, card)), None)
        if found:
            return found["v"]
    return None


def _first_difference(card: str, expected: str) -> str | None:
    """The first line where ``card`` differs from ``expected``, with both versions."""
    for number, pair in enumerate(zip_longest(card.splitlines(), expected.splitlines()), 1):
        if pair[0] != pair[1]:
            stated, given = ("no line" if line is None else repr(line) for line in pair)
            return f"line {number} reads {stated} where the records give {given}"
    return None


def require_valid(folder: Path) -> None:
    """Raise when :func:`check_card` finds problems.

    Raises:
        BadInputError: listing every problem on one line.
    """
    problems = check_card(folder)
    if problems:
        raise BadInputError(f"{Path(folder) / README}: " + "; ".join(problems))
