"""``compress finetune``: causal-LM fine-tuning of a pruned model, sparsity kept exactly."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class OptimizerChoice(str, Enum):
    adamw = "adamw"
    sam_adamw = "sam-adamw"
    asam_adamw = "asam-adamw"


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def finetune(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by compress prune.")],
    data: Annotated[
        str, typer.Option(help="Text: wikipedia, lambada, boolq, a .txt/.jsonl file or folder.")
    ] = "wikipedia",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay to 0).")] = 1e-5,
    optimizer: Annotated[
        OptimizerChoice, typer.Option(help="adamw, or AdamW inside SAM / adaptive SAM (ASAM).")
    ] = OptimizerChoice.adamw,
    rho: Annotated[
        float | None,
        typer.Option(help="SAM radius ρ (default 0.05 for SAM, 0.5 for ASAM)."),
    ] = None,
    eta: Annotated[float, typer.Option(help="ASAM's η in T = |w| + η.")] = 0.01,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    warmup: Annotated[int, typer.Option(help="Linear warmup steps.")] = 0,
    seqlen: Annotated[int, typer.Option(help="Tokens per training window.")] = 256,
    batch: Annotated[int, typer.Option(help="Windows per micro-batch.")] = 4,
    grad_accum: Annotated[
        int, typer.Option(help="Micro-batches per step (SAM redoes its ascent on each).")
    ] = 1,
    eval_every: Annotated[int, typer.Option(help="Held-out loss every K steps.")] = 50,
    eval_windows: Annotated[
        int, typer.Option(help="Held-out windows from the test split (0: none).")
    ] = 16,
    save_every: Annotated[int, typer.Option(help="Checkpoint every K steps.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the window sampling and order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        PrecisionChoice, typer.Option(help="auto (bf16 autocast on GPU, else fp32), fp32, bf16.")
    ] = PrecisionChoice.auto,
    output: Annotated[Path, typer.Option(help="Folder for the fine-tuned model.")] = Path(
        "out/finetuned"
    ),
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from its checkpoint.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTPUT.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune a pruned model (all parameters); pruned weights stay exactly zero."""
    from compress.finetune import FinetuneConfig
    from compress.finetune import finetune as run_finetune

    config = FinetuneConfig(
        model=str(model_dir),
        data=data,
        output=str(output),
        steps=steps,
        lr=lr,
        optimizer=optimizer.value,
        rho=rho,
        eta=eta,
        weight_decay=weight_decay,
        warmup=warmup,
        seqlen=seqlen,
        batch=batch,
        grad_accum=grad_accum,
        eval_every=eval_every,
        eval_windows=eval_windows,
        save_every=save_every,
        seed=seed,
        device=device,
        precision=precision.value,
        resume=resume,
        overwrite=overwrite,
    )
    section = run_finetune(config, progress=progress)
    typer.echo(summary(section))
    typer.echo(f"wrote {output}")


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
