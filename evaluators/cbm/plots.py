"""PNG plots of intervention curves: one line per criterion (colour), per level (line style),
and per model when two are overlaid (marker)."""

from __future__ import annotations

from pathlib import Path

from evaluators.cbm.intervene import Curve

COLOURS = {
    "rand": "tab:gray",
    "ucp": "tab:blue",
    "lcp": "tab:green",
    "cctp": "tab:purple",
    "ectp": "tab:red",
    "eudtp": "tab:orange",
}
STYLES = {"individual": "-", "group": "--"}
MARKERS = ["o", "s", "^", "D"]


def plot_curves(
    models: dict[str, list[Curve]], path: Path, x: str = "concepts", title: str = ""
) -> Path:
    """Task error against concepts revealed (``x="concepts"``) or their cost (``x="cost"``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (model, curves) in enumerate(models.items()):
        marker = MARKERS[index % len(MARKERS)] if len(models) > 1 else None
        for curve in curves:
            label = f"{curve.criterion.upper()} ({curve.level})"
            ax.plot(
                getattr(curve, x),
                [100 * e for e in curve.error],
                linestyle=STYLES.get(curve.level, "-"),
                color=COLOURS.get(curve.criterion),
                marker=marker,
                markersize=3,
                label=f"{model}: {label}" if len(models) > 1 else label,
            )
    ax.set_xlabel(
        "concepts revealed per sample" if x == "concepts" else "intervention cost per sample"
    )
    ax.set_ylabel("task error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
