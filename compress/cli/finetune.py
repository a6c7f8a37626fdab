"""``compress finetune``: causal-LM fine-tuning of a pruned model, sparsity kept exactly."""

from __future__ import annotations

import typer

from compress.app import finetune as workflow
from compress.core.options import command


def _finetune(request: workflow.FinetuneRequest) -> None:
    section = workflow.run_finetune(request)
    typer.echo(summary(section))
    typer.echo(f"wrote {request.config.output}")


finetune = command(
    workflow.FinetuneRequest,
    _finetune,
    "Fine-tune a pruned model (all parameters); pruned weights stay exactly zero.",
    name="finetune",
)


def summary(section: dict) -> str:
    """A few lines: optimizer, tokens and speed, held-out perplexity before/after, sparsity."""
    cfg, held, sparsity = section["config"], section["heldout"], section["sparsity"]
    rho = f" (rho {cfg['rho']})" if cfg["optimizer"] != "adamw" else ""
    lines = [
        f"{cfg['optimizer']}{rho}: {cfg['steps']} steps, {section['tokens']:,} tokens, "
        f"{section['tokens_per_second']:,.0f} tokens/s on {section['device']}",
    ]
    if held["before"] is not None:
        lines.append(
            f"held-out perplexity {held['before']['perplexity']:.3f} -> "
            f"{held['after']['perplexity']:.3f}"
        )
    lines.append(
        f"pruned zeros kept: {sparsity['zeros_after']:,} of {sparsity['zeros_before']:,} "
        f"in {sparsity['masked_parameters']} weights"
    )
    return "\n".join(lines)
