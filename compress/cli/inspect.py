"""``compress eval ppl`` and ``compress info``: read-only views of models and outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compress.cli.render import table


def ppl(
    model: Annotated[
        str | None,
        typer.Argument(help="Hub id, local folder, .gguf file; omitted: the embedded model."),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            help="wikipedia, lambada, boolq (offline), wikitext2, c4 (Hub), or a .txt/.jsonl path."
        ),
    ] = "wikipedia",
    split: Annotated[
        str | None,
        typer.Option(
            help="train, validation or test; default: test for named sources, a file or folder whole."
        ),
    ] = None,
    seqlen: Annotated[
        int,
        typer.Option(
            help="Window length in tokens (the protocol uses the model's context, e.g. 2048)."
        ),
    ] = 2048,
    eval_windows: Annotated[int, typer.Option(help="At most this many windows (0: all).")] = 0,
    max_windows: Annotated[
        int | None, typer.Option(hidden=True, help="Deprecated name of --eval-windows.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result to this JSON file.")
    ] = None,
) -> None:
    """Perplexity over non-overlapping windows (wikitext2/c4: the SparseGPT/Wanda protocol)."""
    from compress.calibration import eval_text
    from compress.core.io import write_json_atomic
    from compress.models import check_seqlen, load_model
    from evaluators.perplexity import perplexity_of_text

    text = eval_text(dataset, split)
    loaded = load_model(model, device, dtype)
    check_seqlen(loaded, seqlen)
    windows = eval_windows if max_windows is None else max_windows
    result = perplexity_of_text(
        loaded.model, loaded.tokenizer, text, seqlen, windows or None, batch_size, progress=True
    )
    result = {"model": loaded.source, **result}
    if json_out:
        write_json_atomic(json_out, result)
    typer.echo(
        table(
            ["dataset", "split", "windows x seqlen", "perplexity"],
            [[dataset, text.split, f"{result['windows']}x{seqlen}", f"{result['perplexity']:.2f}"]],
        )
    )


def info(
    folder: Annotated[Path, typer.Argument(help="An output folder written by compress prune.")],
    layers: Annotated[
        bool,
        typer.Option("--layers/--by-type", help="One row per layer instead of per layer type."),
    ] = False,
    errors: Annotated[
        bool,
        typer.Option("--errors", help="Print per-block normalized reconstruction errors instead."),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw per-block errors (calibration vs held-out) to this PNG."),
    ] = None,
) -> None:
    """Print the recipe and measured sparsity of a pruned model folder (or its per-block errors)."""
    from compress.core.errors import BadInputError
    from compress.core.report import read_report

    report = read_report(folder)
    if errors or plot:
        rows = error_rows(report["blocks"])
        if not rows:
            raise BadInputError(
                f"{folder} has no per-block errors: prune with --errors or a br* --reconstruct"
            )
        if errors:
            typer.echo(
                table(
                    [
                        "block",
                        "calib before",
                        "calib after",
                        "held-out before",
                        "held-out after",
                        "seconds",
                    ],
                    rows,
                )
            )
        if plot:
            plot_errors(rows, plot, report["recipe"])
            typer.echo(f"wrote {plot}")
        return
    typer.echo(json.dumps(report["recipe"], indent=2))
    rows = layer_rows(report["layers"], per_layer=layers)
    typer.echo(table(["layer" if layers else "layer type", "count", "target", "measured"], rows))


def error_rows(blocks: list[dict]) -> list[list]:
    """Per block: normalized error vs the dense model, before/after reconstruction."""
    rows = []
    for block in blocks:
        if "errors" not in block:
            continue
        before, after = (
            block["errors"]["before_reconstruction"],
            block["errors"]["after_reconstruction"],
        )
        rows.append(
            [
                block["index"],
                before["calibration"],
                after["calibration"],
                before.get("holdout"),
                after.get("holdout"),
                block["seconds"],
            ]
        )
    return rows


def plot_errors(rows: list[list], path: Path, recipe: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [row[0] for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(blocks, [row[2] for row in rows], marker="o", label="calibration (after)")
    if all(row[4] is not None for row in rows):
        ax.plot(blocks, [row[4] for row in rows], marker="s", label="held-out (after)")
    ax.plot(
        blocks, [row[1] for row in rows], linestyle=":", color="gray", label="calibration (before)"
    )
    ax.set_xlabel("block")
    ax.set_ylabel("normalized error vs dense model")
    ax.set_yscale("log")
    ax.set_title(
        f"{recipe['method']} {recipe['pattern']} {recipe['sparsity']:.0%}, {recipe['reconstruct']['technique']}"
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_rows(layers: dict[str, dict], per_layer: bool) -> list[list]:
    """Sparsity rows, one per layer or one per layer type as the model card groups them (the
    path after the block index: ``self_attn.q_proj``, ``mlp.c_proj``)."""
    from compress.core.report import sparsity_by_type

    if per_layer:
        return [
            [name, 1, entry["target_sparsity"], entry["sparsity"]] for name, entry in layers.items()
        ]
    return [
        [row["type"], row["layers"], ", ".join(f"{t:.4g}" for t in row["target"]), row["sparsity"]]
        for row in sparsity_by_type(layers)
    ]
