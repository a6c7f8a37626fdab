"""``compress eval sharpness``: λ_max and tr(Hᵏ) of the LM loss over the unpruned weights."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from compress.core.errors import BadInputError


class Split(str, Enum):
    train = "train"
    test = "test"


def sharpness(
    model_dir: Annotated[
        Path, typer.Argument(help="A model folder (e.g. written by compress prune or finetune).")
    ],
    data: Annotated[
        str, typer.Option(help="Text: wikipedia, lambada, boolq, a .txt/.jsonl file or folder.")
    ] = "wikipedia",
    split: Annotated[Split, typer.Option(help="Which split of the text.")] = Split.train,
    nsamples: Annotated[int, typer.Option(help="Token windows the loss averages over.")] = 8,
    seqlen: Annotated[int, typer.Option(help="Tokens per window.")] = 128,
    batch: Annotated[int, typer.Option(help="Windows per forward pass.")] = 4,
    power_iters: Annotated[int, typer.Option(help="Most power iterations for λ_max.")] = 20,
    tol: Annotated[float, typer.Option(help="Relative change of λ that stops the iteration.")] = (
        1e-3
    ),
    probes: Annotated[int, typer.Option(help="Hutchinson probes (Rademacher vectors).")] = 10,
    max_power: Annotated[int, typer.Option(help="Highest k of tr(H^k).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of windows and probes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    output: Annotated[
        Path | None, typer.Option(help="Results JSON (default: MODEL_DIR/sharpness.json).")
    ] = None,
) -> None:
    """Largest Hessian eigenvalue (power iteration) and Hutchinson tr(H^k) of the causal-LM loss.

    Only unpruned weights count: every exact zero in a block Linear weight is excluded from
    the probe vectors. Results go to JSON and, for a compress folder, to report.json
    (evaluation.sharpness).
    """
    from compress.calibration import load_windows
    from compress.core.io import write_json_atomic
    from compress.core.report import REPORT_NAME, update_report
    from compress.finetune import sparsity_masks
    from compress.models import load_model
    from evaluators.sharpness import lm_sharpness

    if min(nsamples, seqlen, batch, power_iters, probes, max_power) < 1:
        raise BadInputError(
            "--nsamples, --seqlen, --batch, --power-iters, --probes and --max-power must be >= 1"
        )
    if not model_dir.is_dir():
        raise BadInputError(f"model folder {model_dir} does not exist")
    loaded = load_model(str(model_dir), device=device, dtype="float32")
    windows = load_windows(loaded.tokenizer, data, nsamples, seqlen, seed, split.value)
    masks = sparsity_masks(loaded.model)
    result = lm_sharpness(
        loaded.model,
        windows.ids,
        batch,
        masks,
        power_iters=power_iters,
        tol=tol,
        probes=probes,
        max_power=max_power,
        seed=seed,
    )
    result["data"] = windows.describe()
    result["pruned_weights_excluded"] = sum(int((~m).sum()) for m in masks.values())
    output = output or model_dir / "sharpness.json"
    write_json_atomic(output, result)
    if (model_dir / REPORT_NAME).is_file():
        update_report(model_dir, "evaluation", {"sharpness": result})
    typer.echo(sharpness_table(result))
    typer.echo(f"wrote {output}")


def sharpness_table(result: dict) -> str:
    """Measure, estimate and its uncertainty, one row each."""
    top = result["lambda_max"]
    state = "converged" if top["converged"] else "not converged"
    rows = [
        (
            "lambda_max",
            f"{top['value']:.6g}",
            f"residual {top['residual']:.3g}, {top['iterations']} iterations, {state}",
        )
    ]
    for k, moment in result["trace_moments"].items():
        low, high = moment["ci95"]
        name = "tr(H)" if k == "1" else f"tr(H^{k})"
        rows.append(
            (
                name,
                f"{moment['estimate']:.6g}",
                f"95% CI [{low:.6g}, {high:.6g}], {moment['probes']} probes",
            )
        )
    width = max(len(r[0]) for r in rows)
    value_width = max(len("estimate"), *(len(r[1]) for r in rows))
    lines = [f"{'measure':<{width}}  {'estimate':>{value_width}}  uncertainty"]
    lines += [f"{a:<{width}}  {b:>{value_width}}  {c}" for a, b, c in rows]
    lines.append(
        f"over {result['dimension']:,} unpruned parameters, {result['batches']} batches, "
        f"{result['hessian_vector_products']} Hessian-vector products, {result['seconds']:.1f} s"
    )
    return "\n".join(lines)
