"""``compress eval tasks | all | compare``: zero-shot accuracy through lm-eval, and comparisons."""

from __future__ import annotations

import typer

from compress.app import evaluate
from compress.core.options import command


def _log(line: str) -> None:
    typer.echo(line, err=True)


def _tasks(config: evaluate.TasksConfig) -> None:
    from evaluators.tasks.tables import results_table

    done = evaluate.evaluate_tasks(config, _log)
    record = done.record
    typer.echo(results_table(record))
    typer.echo(
        f"wrote {done.output} ({record['source']} data, lm-eval {record['harness']['version']})"
    )


def _all(config: evaluate.AllConfig) -> None:
    from compress.core.report import perplexity_label
    from evaluators.tasks.tables import results_table

    result = evaluate.evaluate_all(config, _log)
    ppl = result["perplexity"]
    typer.echo(results_table(result["tasks"]))
    typer.echo(f"perplexity {perplexity_label(ppl)}: {ppl['after']:.2f}")
    typer.echo(f"updated {config.folder / 'report.json'} (evaluation.perplexity, evaluation.tasks)")


def _compare(config: evaluate.CompareConfig) -> None:
    from evaluators.tasks.tables import compare_table

    result = evaluate.compare(config)
    typer.echo(compare_table(result.models))
    typer.echo("items: " + "; ".join(f"{label}: {text}" for label, text in result.items.items()))
    if not result.same_items:
        _log("warning: the models were scored on different items; recovery compares unlike sets")


tasks = command(
    evaluate.TasksConfig,
    _tasks,
    "Zero-shot accuracy on the paper's tasks through lm-eval; resumes finished tasks.",
    name="tasks",
)
run_all = command(
    evaluate.AllConfig,
    _all,
    "Perplexity and zero-shot tasks for a pruned folder, merged into its report.json.",
    name="run_all",
)
compare = command(
    evaluate.CompareConfig,
    _compare,
    "Models side by side, with each one's recovery % of the first (dense) model.",
    name="compare",
)
