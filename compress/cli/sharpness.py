"""``compress eval sharpness``: λ_max and tr(Hᵏ) of the LM loss over the unpruned weights."""

from __future__ import annotations

import typer

from compress.app import evaluate
from compress.core.options import command


def _sharpness(config: evaluate.SharpnessConfig) -> None:
    done = evaluate.sharpness(config)
    typer.echo(sharpness_table(done.record))
    typer.echo(f"wrote {done.output}")


sharpness = command(
    evaluate.SharpnessConfig,
    _sharpness,
    """Largest Hessian eigenvalue (power iteration) and Hutchinson tr(H^k) of the causal-LM loss.

    Only unpruned weights count: every exact zero in a block Linear weight is excluded from
    the probe vectors. Results go to JSON and, for a compress folder, to report.json
    (evaluation.sharpness).
    """,
    name="sharpness",
)


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
