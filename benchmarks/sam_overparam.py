"""Does SAM's gain grow with overparameterization, and with sparsity at a fixed budget?

The direction of "Critical Influence of Overparameterization on Sharpness-aware Minimization"
(UAI 2025; reference/sam.md) at CPU scale: one-hidden-layer ReLU MLPs on scikit-learn's digits
(8x8 images, 10 classes), trained with SGD and with SAM (same base SGD, same epochs), over

- dense: hidden width 16 .. 1024;
- sparse: a fixed budget of non-zero weights (those of the dense width-``base`` net) spread over
  wider nets, i.e. width x and density base/x, with a random static mask kept exactly by the
  mask-aware SAM of compress.algorithms.sam (and by the same masking for SGD).

For each solution: test accuracy (mean and std over seeds), SAM - SGD gain, and λ_max of the
training-loss Hessian over the unpruned weights (evaluators.sharpness). Prints a table, writes
``results.json`` and ``sam_overparam.png`` under ``--output``.

Run: ``.venv/bin/python benchmarks/sam_overparam.py`` (needs the ``bench`` extra).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from torch import nn

from compress.algorithms.sam import SAM, mask_gradients, mask_weights
from compress.core.io import write_json_atomic
from evaluators.sharpness import HessianOperator, top_eigenvalue

CLASSES = 10
FEATURES = 64


def load_digits_split(train_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Digits scaled to [0, 1], split at random into ``train_size`` train and the rest test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = perm[:train_size], perm[train_size:]
    return x[train], y[train], x[test], y[test]


def make_mlp(width: int, density: float, seed: int) -> tuple[nn.Module, dict]:
    """64 -> width -> 10 ReLU MLP; with density < 1 a random keep-mask on both weights.

    Kept weights are rescaled by 1/sqrt(density) so every unit sees the same input variance as
    in the dense net of the same fan-in budget.
    """
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Linear(width, CLASSES))
    masks = {}
    if density < 1.0:
        generator = torch.Generator().manual_seed(seed + 1)
        for layer in (model[0], model[2]):
            mask = torch.rand(layer.weight.shape, generator=generator) < density
            masks[layer.weight] = mask
            with torch.no_grad():
                layer.weight.mul_(mask / density**0.5)
    return model, masks


def train(
    model: nn.Module, masks: dict, data: tuple, use_sam: bool, args: dict, seed: int
) -> float:
    """Mini-batch training; returns the final training loss (full batch)."""
    x, y = data[0], data[1]
    params = list(model.parameters())
    sgd = dict(lr=args["lr"], momentum=0.9)
    if use_sam:
        optimizer = SAM(params, torch.optim.SGD, rho=args["rho"], masks=masks, **sgd)
    else:
        optimizer = torch.optim.SGD(params, **sgd)
    loss_fn = nn.functional.cross_entropy
    generator = torch.Generator().manual_seed(seed)
    for _ in range(args["epochs"]):
        for batch in torch.randperm(len(x), generator=generator).split(args["batch"]):
            xb, yb = x[batch], y[batch]
            if use_sam:
                optimizer.step(lambda xb=xb, yb=yb: loss_fn(model(xb), yb).backward())
            else:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                mask_gradients(masks)
                optimizer.step()
                mask_weights(masks)
    with torch.no_grad():
        return float(loss_fn(model(x), y))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def lambda_max(model: nn.Module, masks: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    op = HessianOperator(
        list(model.parameters()), [lambda: nn.functional.cross_entropy(model(x), y)], masks
    )
    return top_eigenvalue(op, iters=100, tol=1e-4)["value"]


def mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def run_setting(width: int, density: float, data: tuple, seeds: int, args: dict) -> dict:
    """SGD and SAM on one architecture over ``seeds`` seeds."""
    row: dict = {"width": width, "density": density}
    for name, use_sam in (("sgd", False), ("sam", True)):
        accs, lams, losses = [], [], []
        for seed in range(seeds):
            model, masks = make_mlp(width, density, seed)
            losses.append(train(model, masks, data, use_sam, args, seed))
            accs.append(accuracy(model, data[2], data[3]))
            lams.append(lambda_max(model, masks, data[0], data[1]))
        nonzero = sum(int((p != 0).sum()) for p in model.parameters() if p.dim() == 2)
        row["nonzero_weights"] = nonzero
        row[name] = {
            "test_acc": mean_std(accs),
            "lambda_max": mean_std(lams),
            "train_loss": mean_std(losses),
            "per_seed_test_acc": accs,
        }
    row["gain"] = row["sam"]["test_acc"][0] - row["sgd"]["test_acc"][0]
    return row


def table(rows: list[dict], title: str) -> str:
    head = (
        f"{'width':>6} {'density':>8} {'nnz':>7}  {'SGD acc':>13} {'SAM acc':>13} "
        f"{'gain':>7}  {'λmax SGD':>9} {'λmax SAM':>9}  {'loss SGD':>8} {'loss SAM':>8}"
    )
    lines = [title, head]
    for r in rows:
        sgd, sam = r["sgd"], r["sam"]
        lines.append(
            f"{r['width']:>6} {r['density']:>8.4f} {r['nonzero_weights']:>7}  "
            f"{100 * sgd['test_acc'][0]:>6.2f}±{100 * sgd['test_acc'][1]:<5.2f} "
            f"{100 * sam['test_acc'][0]:>6.2f}±{100 * sam['test_acc'][1]:<5.2f} "
            f"{100 * r['gain']:>+7.2f}  {sgd['lambda_max'][0]:>9.3f} {sam['lambda_max'][0]:>9.3f}"
            f"  {sgd['train_loss'][0]:>8.4f} {sam['train_loss'][0]:>8.4f}"
        )
    return "\n".join(lines)


def plot(dense: list[dict], sparse: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for rows, label in ((dense, "dense"), (sparse, "sparse, fixed non-zeros")):
        widths = [r["width"] for r in rows]
        axes[0].plot(widths, [100 * r["gain"] for r in rows], "o-", label=label)
        for name, style in (("sgd", "--"), ("sam", "-")):
            lam = [r[name]["lambda_max"][0] for r in rows]
            axes[1].plot(widths, lam, "o" + style, label=f"{label}, {name.upper()}")
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[0].set(xscale="log", xlabel="hidden width", ylabel="SAM - SGD test accuracy (pp)")
    axes[1].set(xscale="log", yscale="log", xlabel="hidden width", ylabel="λ_max (train loss)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("SAM vs SGD on digits MLPs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(
    output: Annotated[Path, typer.Option(help="Folder for results.json and the plot.")] = Path(
        "out/bench/sam_overparam"
    ),
    widths: Annotated[str, typer.Option(help="Dense hidden widths.")] = "8,32,128,512,2048",
    base: Annotated[
        int, typer.Option(help="Dense width whose non-zeros the sparse nets keep.")
    ] = 64,
    sparse_widths: Annotated[
        str, typer.Option(help="Widths of the sparse nets (each at least --base).")
    ] = "64,128,256,512,1024",
    seeds: Annotated[int, typer.Option(help="Seeds per setting.")] = 3,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 60,
    batch: Annotated[int, typer.Option(help="Mini-batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="SGD learning rate (momentum 0.9).")] = 0.05,
    rho: Annotated[float, typer.Option(help="SAM radius ρ.")] = 0.05,
    train_size: Annotated[int, typer.Option(help="Training images (the rest are test).")] = 500,
    threads: Annotated[int, typer.Option(help="torch intra-op threads.")] = 1,
) -> None:
    """SAM vs SGD test accuracy and λ_max over MLP width, dense and at fixed non-zeros."""
    torch.set_num_threads(threads)
    args = dict(epochs=epochs, batch=batch, lr=lr, rho=rho)
    dense_widths = [int(w) for w in widths.split(",")]
    wide = [int(w) for w in sparse_widths.split(",")]
    if min(wide) < base:
        raise typer.BadParameter(f"every sparse width must be at least --base {base}")
    data = load_digits_split(train_size, seed=0)
    start = time.perf_counter()
    dense = [run_setting(w, 1.0, data, seeds, args) for w in dense_widths]
    sparse = [run_setting(w, base / w, data, seeds, args) for w in wide]
    seconds = time.perf_counter() - start
    setup = (
        f"digits: {len(data[0])} train / {len(data[2])} test images; {seeds} seeds; "
        f"SGD(momentum 0.9, lr {lr}) vs SAM(rho {rho}) over it; {epochs} epochs, batch {batch}; "
        f"float32, {platform.processor() or platform.machine()}, {threads} thread(s); "
        f"{seconds:.0f} s"
    )
    print(setup)
    print(table(dense, "dense MLPs (64 -> width -> 10)"))
    print(table(sparse, f"sparse MLPs at the non-zeros of width {base} (density {base}/width)"))
    output.mkdir(parents=True, exist_ok=True)
    results = {"setup": setup, "args": args, "dense": dense, "sparse": sparse}
    write_json_atomic(output / "results.json", results)
    plot(dense, sparse, output / "sam_overparam.png")
    print(f"wrote {output / 'results.json'} and {output / 'sam_overparam.png'}")


if __name__ == "__main__":
    typer.run(main)
