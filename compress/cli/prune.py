"""``compress prune``: the command built from :class:`~compress.core.config.PruneConfig`'s
options, calling :func:`compress.app.prune.run_prune` and rendering its report."""

from __future__ import annotations

import time

import typer

from compress.cli.render import gib, table
from compress.core.config import PruneConfig
from compress.core.options import command
from compress.core.report import RECIPE_NAME


def run(config: PruneConfig) -> None:
    """Prune a causal LM block by block and write model, tokenizer, recipe.json and report.json."""
    from compress.app import prune as workflow

    report = workflow.run_prune(config, on_block=_progress(), log=lambda m: typer.echo(m, err=True))
    typer.echo(summary_table(report))
    typer.echo(f"wrote {config.output}")
    if "hub" in report:
        typer.echo(f"pushed to {report['hub']['url']} (commit {report['hub']['commit']})")


# recipe.json holds the config's record and the package versions (app/prune.py _write_staging)
prune = command(
    PruneConfig,
    run,
    run.__doc__ or "",
    name="prune",
    recipe=RECIPE_NAME,
    recipe_extras=("versions",),
)


def _progress():
    """A one-line progress display over blocks with elapsed time, ETA and tokens/s."""
    start = time.perf_counter()

    def show(done: int, total: int, tokens_per_second: float) -> None:
        nonlocal start
        if done == 0:
            start = time.perf_counter()
            return
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (total - done)
        end = "\n" if done == total else "\r"
        typer.echo(
            f"blocks {done}/{total}  elapsed {elapsed:5.0f}s  eta {eta:5.0f}s  {tokens_per_second:,.0f} tok/s",
            err=True,
            nl=False,
        )
        typer.echo(end, err=True, nl=False)

    return show


def summary_table(report: dict) -> str:
    """Method, sparsity, time, peak memory, perplexity before -> after."""
    from compress.core.report import perplexity_label

    s = report["summary"]
    ppl = report.get("evaluation", {}).get("perplexity")
    rows = [
        ["method", s["method"]],
        ["pattern", s["pattern"]],
        ["sparsity (pruned layers)", f"{s['sparsity']:.2%}"],
        ["sparsity (all parameters)", f"{s['model_sparsity']:.2%}"],
        ["pruning time", f"{s['prune_seconds']:.1f} s"],
        ["total time", f"{s['seconds']:.1f} s"],
        ["peak RSS", gib(s["peak_rss_bytes"])],
        ["peak accelerator memory", gib(s["peak_accelerator_bytes"])],
    ]
    q = report.get("quantization")
    if q:
        grouping = f"groups of {q['group_size']}" if q["group_size"] else "per output row"
        how = "joint with pruning" if q["joint"] else q["quantizer"]
        rows.append(["quantization", f"{q['grid']}, {grouping}, {how}"])
        if q["mean_error"] is not None:
            rows.append(
                ["rounding error (mean, max)", f"{q['mean_error']:.4f}, {q['max_error']:.4f}"]
            )
    if ppl:
        rows.append(
            [
                f"perplexity {perplexity_label(ppl)}",
                f"{ppl['before']:.2f} -> {ppl['after']:.2f}",
            ]
        )
    return table(["", "value"], rows)
