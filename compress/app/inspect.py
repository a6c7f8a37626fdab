"""``compress info``: what a pruned folder's report says (recipe, sparsity, per-block errors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.core.errors import BadInputError
from compress.core.options import option


@dataclass(frozen=True)
class InfoConfig:
    """``compress info``."""

    folder: Path = option(argument=True, help="An output folder written by compress prune.")
    layers: bool = option(
        False,
        flags="--layers",
        negative="--by-type",
        help="One row per layer instead of per layer type.",
    )
    errors: bool = option(
        False, flags="--errors", help="Print per-block normalized reconstruction errors instead."
    )
    plot: Path | None = option(
        None,
        writes=True,
        help="Draw per-block errors (calibration vs held-out) and per-block sparsity to this PNG.",
    )


@dataclass(frozen=True)
class FolderInfo:
    recipe: dict
    layer_rows: list[list]  # layer (type), count, target, measured sparsity
    error_rows: list[list]  # per block (see error_rows); empty unless errors or a plot was asked


def inspect_folder(config: InfoConfig) -> FolderInfo:
    """The folder's recipe and sparsity rows, or its per-block errors (drawn to ``plot``).

    Raises:
        BadInputError: no report.json, or errors asked for where none were measured.
    """
    from compress.core.report import read_report

    folder, plot = config.folder, config.plot
    report = read_report(folder)
    if config.errors or plot:
        rows = error_rows(report["blocks"])
        sparsities = block_sparsities(report["blocks"])
        if not rows and (config.errors or not sparsities):
            raise BadInputError(
                f"{folder} has no per-block errors: prune with --errors or a br* --reconstruct"
            )
        if plot:
            plot_errors(rows, plot, report["recipe"], sparsities)
        return FolderInfo(report["recipe"], [], rows)
    return FolderInfo(report["recipe"], layer_rows(report["layers"], config.layers), [])


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


def block_sparsities(blocks: list[dict]) -> list[tuple[int, float]]:
    """(block, measured sparsity) for the blocks whose report entry records it."""
    return [
        (block["index"], block["sparsity"]["sparsity"]) for block in blocks if "sparsity" in block
    ]


def plot_errors(
    rows: list[list], path: Path, recipe: dict, sparsities: list[tuple[int, float]] = ()
) -> None:
    """Per-block errors (when measured) above the per-block sparsity actually used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [kind for kind, present in (("errors", rows), ("sparsity", sparsities)) if present]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 3 + 1.5 * len(panels)), squeeze=False)
    if sparsities:
        low = axes[-1][0]
        low.bar([b for b, _ in sparsities], [s for _, s in sparsities], color="tab:green")
        low.axhline(recipe["sparsity"], color="gray", linestyle=":", label="target")
        low.set_xlabel("block")
        low.set_ylabel("sparsity")
        low.set_ylim(max(min(s for _, s in sparsities) - 0.1, 0), 1)
        low.legend()
    if rows:
        _draw_errors(axes[0][0], rows)
    axes[0][0].set_title(
        f"{recipe['method']} {recipe['pattern']} {recipe['sparsity']:.0%}, {recipe['reconstruct']['technique']}"
        + (f", {recipe['sparsity_profile']}" if "sparsity_profile" in recipe else "")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_errors(ax, rows: list[list]) -> None:
    blocks = [row[0] for row in rows]
    ax.plot(blocks, [row[2] for row in rows], marker="o", label="calibration (after)")
    if all(row[4] is not None for row in rows):
        ax.plot(blocks, [row[4] for row in rows], marker="s", label="held-out (after)")
    ax.plot(
        blocks, [row[1] for row in rows], linestyle=":", color="gray", label="calibration (before)"
    )
    ax.set_xlabel("block")
    ax.set_ylabel("normalized error vs dense model")
    ax.set_yscale("log")
    ax.legend()


def layer_rows(layers: dict[str, dict], per_layer: bool) -> list[list]:
    """Sparsity rows, one per layer or one per layer type as the model card groups them (the
    path after the block index: ``self_attn.q_proj``, ``mlp.c_proj``)."""
    from compress.core.report import describe_targets, sparsity_by_type

    if per_layer:
        return [
            [name, 1, entry["target_sparsity"], entry["sparsity"]] for name, entry in layers.items()
        ]
    return [
        [
            row["type"],
            row["layers"],
            describe_targets(row["target"], "{:.4g}".format),
            row["sparsity"],
        ]
        for row in sparsity_by_type(layers)
    ]
