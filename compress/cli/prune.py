"""``compress prune``: thin wrapper over :func:`compress.app.prune.run_prune`."""

from __future__ import annotations

import time
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import typer

from compress.cli.render import gib, table
from compress.core.config import MagnitudeScope, Method, PruneConfig, StatsFrom, Technique


def prune(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Hub id, local folder or .gguf file; omitted: the embedded SmolLM2-135M-Instruct."
        ),
    ] = None,
    method: Annotated[
        Method,
        typer.Option(help="Pruner: magnitude (|W|), wanda (|W|·‖X‖₂) or sparsegpt (OBS update)."),
    ] = Method.wanda,
    sparsity: Annotated[
        float,
        typer.Option(
            help="Target sparsity s in [0, 1): share of zeros per layer (ignored for N:M)."
        ),
    ] = 0.5,
    pattern: Annotated[
        str,
        typer.Option(help="'unstructured' or N:M such as 2:4 or 4:8 (keep N of every M weights)."),
    ] = "unstructured",
    magnitude_scope: Annotated[
        MagnitudeScope | None,
        typer.Option(
            help="Magnitude only: one |W| threshold per layer (default; the papers' baseline) or per output row."
        ),
    ] = None,
    calib: Annotated[
        str,
        typer.Option(
            help="Calibration text: wikipedia, lambada, boolq (offline), wikitext2, c4 (Hub), or a .txt/.jsonl file or folder."
        ),
    ] = "wikipedia",
    self_gen: Annotated[
        str | None,
        typer.Option(
            "--self-gen",
            help="Add self-generated calibration text: N texts the model writes now (the paper's recipe; kept as selfgen.jsonl in the output), or a .jsonl from `compress calib generate`. With --calib none it is the only source.",
        ),
    ] = None,
    stats_from: Annotated[
        StatsFrom,
        typer.Option(
            help="Pruner statistics (Wanda ‖X‖, SparseGPT H) from real windows only (the paper) or from all windows."
        ),
    ] = StatsFrom.real,
    nsamples: Annotated[int, typer.Option(help="Number N of calibration sequences.")] = 128,
    seqlen: Annotated[
        int, typer.Option(help="Length T of each calibration sequence, in tokens.")
    ] = 2048,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "--recon-batch",
            help="Sequences per forward pass and per reconstruction step.",
        ),
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed for choosing calibration windows.")] = 0,
    output: Annotated[Path, typer.Option(help="Output folder (written atomically).")] = Path(
        "out/pruned"
    ),
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing non-empty output folder.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.")
    ] = "auto",
    skip: Annotated[
        list[str] | None,
        typer.Option(
            help="Glob of layer names to leave dense, e.g. '*.mlp.down_proj' (repeatable). LM head and embeddings are never pruned."
        ),
    ] = None,
    layer_sparsity: Annotated[
        list[str] | None,
        typer.Option(
            help="Per-layer override PATTERN=S, e.g. '*.down_proj=0.3' (repeatable; last match wins)."
        ),
    ] = None,
    reconstruct: Annotated[
        Technique,
        typer.Option(
            help="none (mask only), lr (the pruner's layer update), br (block-wise), br+gp (dense-model targets), br+gp+cr / br+cr (two-block windows)."
        ),
    ] = Technique.br_gp,
    recon_epochs: Annotated[
        int, typer.Option(help="Reconstruction epochs over the calibration set.")
    ] = 10,
    recon_lr: Annotated[
        float, typer.Option(help="Adam learning rate (decays linearly to 0, no warm-up).")
    ] = 2e-4,
    recon_optimizer: Annotated[
        str, typer.Option(help="adam, or sam (sharpness-aware, around Adam).")
    ] = "adam",
    recon_rho: Annotated[
        float, typer.Option(help="SAM radius rho for --recon-optimizer sam.")
    ] = 2e-4,
    recon_early_stop: Annotated[
        bool,
        typer.Option(
            help="Stop a block's reconstruction when its held-out error rises; keep the best weights."
        ),
    ] = False,
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Held-out text for errors and early stopping (its test split); default: the calibration source."
        ),
    ] = None,
    holdout_nsamples: Annotated[
        int, typer.Option(help="Held-out sequences (fewer if the split is short).")
    ] = 16,
    errors: Annotated[
        bool | None,
        typer.Option(
            "--errors/--no-errors",
            help="Measure per-block normalized error vs the dense model; default: on for br*.",
        ),
    ] = None,
    activations_dtype: Annotated[
        str,
        typer.Option(
            help="Storage dtype of activations: auto (the model's), float32, bfloat16, float16."
        ),
    ] = "auto",
    activations_device: Annotated[
        str,
        typer.Option(
            help="Where activation streams live: auto (the accelerator if they fit in half its free memory, else pinned CPU memory streamed per batch), accelerator, cpu."
        ),
    ] = "auto",
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an interrupted run of the same settings from its last finished block."
        ),
    ] = False,
    eval: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Measure perplexity before and after pruning.")
    ] = False,
    eval_dataset: Annotated[
        str, typer.Option(help="Text whose test split --eval measures (same names as --calib).")
    ] = "wikipedia",
    eval_seqlen: Annotated[
        int | None, typer.Option(help="Window length for --eval; default: --seqlen.")
    ] = None,
    eval_windows: Annotated[
        int | None, typer.Option(help="At most this many windows for --eval (0: all).")
    ] = 40,
    device_map: Annotated[
        str | None,
        typer.Option(
            help="Spread the model with accelerate: auto, balanced, sequential, or a JSON map; blocks whose weights wait on CPU/disk are onloaded to --device for their turn."
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Memory budget per device for --device-map, e.g. '0=20GiB,1=20GiB,cpu=64GiB'."
        ),
    ] = None,
    offload_folder: Annotated[
        str | None, typer.Option(help="Folder for weights offloaded to disk by --device-map.")
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            help="Data-parallel calibration across the processes of torchrun / accelerate launch (rank 0 writes)."
        ),
    ] = False,
    load_in_8bit: Annotated[
        bool,
        typer.Option(
            help="Refused: pruning needs the dense weights (quantize the result with compress export bnb)."
        ),
    ] = False,
    load_in_4bit: Annotated[
        bool,
        typer.Option(
            help="Refused: pruning needs the dense weights (quantize the result with compress export bnb)."
        ),
    ] = False,
    push_to_hub: Annotated[
        bool,
        typer.Option(
            help="Upload the output folder (model, card, report) to the Hugging Face Hub when done."
        ),
    ] = False,
    hub_repo_id: Annotated[
        str | None,
        typer.Option(
            help="Hub repository for --push-to-hub (default: the output folder's name under your account)."
        ),
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code from the Hub repository to run.")
    ] = False,
) -> None:
    """Prune a causal LM block by block and write model, tokenizer, recipe.json and report.json."""
    from compress.app.prune import run_prune
    from compress.core.config import (
        CalibrationConfig,
        EvalConfig,
        PruneConfig,
        ReconstructConfig,
        parse_layer_sparsity,
    )
    from compress.placement import refuse_quantized

    refuse_quantized(load_in_8bit, load_in_4bit)

    config = PruneConfig(
        model=model,
        method=method,
        sparsity=sparsity,
        pattern=pattern,
        skip=skip or [],
        layer_sparsity=parse_layer_sparsity(layer_sparsity or []),
        magnitude_scope=magnitude_scope,
        calibration=CalibrationConfig(
            calib, nsamples, seqlen, seed, batch_size, self_gen, stats_from
        ),
        reconstruct=ReconstructConfig(
            reconstruct,
            recon_epochs,
            recon_lr,
            recon_optimizer,
            recon_rho,
            recon_early_stop,
            holdout,
            holdout_nsamples,
            errors,
            activations_dtype,
            activations_device,
        ),
        evaluation=EvalConfig(eval, eval_dataset, eval_seqlen, eval_windows or None),
        device=device,
        dtype=dtype,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        distributed=distributed,
        output=str(output),
        overwrite=overwrite,
        resume=resume,
        push_to_hub=push_to_hub,
        hub_repo_id=hub_repo_id,
        trust_remote_code=trust_remote_code,
    )
    report = run_prune(config, on_block=_progress(), log=lambda m: typer.echo(m, err=True))
    typer.echo(summary_table(report))
    typer.echo(f"wrote {output}")
    if "hub" in report:
        typer.echo(f"pushed to {report['hub']['commit']}")


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
    if ppl:
        rows.append(
            [
                f"perplexity {perplexity_label(ppl)}",
                f"{ppl['before']:.2f} -> {ppl['after']:.2f}",
            ]
        )
    return table(["", "value"], rows)


# -- from a recorded recipe back to the command line ------------------------------------------
# How a `compress prune` parameter names its recipe field: as RENAMED says, else the field of
# that name at the top, else the field of a section after the section's prefix. One small
# mapping, meant to move onto the config dataclasses' own metadata.
RENAMED = {
    "calib": "calibration.source",
    "reconstruct": "reconstruct.technique",
    "errors": "reconstruct.measure_errors",
    "eval": "evaluation.enabled",
    "eval_windows": "evaluation.max_windows",
}
SECTIONS = (
    ("recon_", "reconstruct"),
    ("eval_", "evaluation"),
    ("", "calibration"),
    ("", "reconstruct"),
)
NONE_AS = {"eval_windows": "0"}  # the value that gives None where the option's default is not
ATTEMPT_FIELDS = ("overwrite", "resume", "push_to_hub", "hub_repo_id")  # not the model itself


@lru_cache(maxsize=1)
def recipe_fields() -> frozenset[str]:
    """Every recipe field, dotted (``method``, ``calibration.seqlen``, ...)."""
    config, names = PruneConfig(), set()
    for item in fields(config):
        value = getattr(config, item.name)
        subs = [f"{item.name}.{f.name}" for f in fields(value)] if is_dataclass(value) else []
        names |= set(subs) or {item.name}
    return frozenset(names)


def option_field(name: str) -> str | None:
    """The recipe field that the ``compress prune`` parameter ``name`` sets; None when it sets
    none (``--load-in-8bit``/``--load-in-4bit``, which are refused)."""
    candidates = [RENAMED.get(name), name]
    candidates += [
        f"{sec}.{name.removeprefix(pre)}" for pre, sec in SECTIONS if name.startswith(pre)
    ]
    return next((c for c in candidates if c in recipe_fields()), None)


@lru_cache(maxsize=1)
def prune_parameters() -> tuple:
    """The parsed parameters of ``compress prune`` (name, opts, is_flag, multiple, default)."""
    single = typer.Typer(add_completion=False)
    single.command()(prune)
    return tuple(typer.main.get_command(single).params)


def recipe_argv(recipe: dict) -> list[str]:
    """``compress prune`` arguments that parse back to ``recipe`` (recipe.json's layout): every
    recorded value spelled out (defaults may change), except flags at their default and the
    fields about the attempt rather than the model (``ATTEMPT_FIELDS``)."""
    argv: list[str] = []
    for param in prune_parameters():
        field = option_field(param.name)
        if field is None or field in ATTEMPT_FIELDS:
            continue
        section, _, key = field.rpartition(".")
        holder = recipe.get(section, {}) if section else recipe
        if key in holder:
            argv += _spelled(param, holder[key])
    return argv


def _spelled(param, value: object) -> list[str]:
    if param.param_type_name == "argument":
        return [] if value is None else [str(value)]
    flag = param.opts[0]
    if param.is_flag:
        return [] if value == param.default else [flag if value else param.secondary_opts[0]]
    if value is None:
        return [flag, NONE_AS[param.name]] if param.name in NONE_AS else []
    if isinstance(value, dict):
        value = [f"{k}={v}" for k, v in value.items()]
    items = value if param.multiple else [value]
    return [arg for item in items for arg in (flag, str(item))]


def unflagged_fields(recipe: dict) -> list[str]:
    """Set recipe entries no ``compress prune`` option expresses (e.g. a ``finetune``
    section added later), dotted."""
    known = ({option_field(p.name) for p in prune_parameters()} - {None}) | set(ATTEMPT_FIELDS)
    names = []
    for key, value in recipe.items():
        if isinstance(value, dict) and any(f.startswith(f"{key}.") for f in known):
            names += [f"{key}.{k}" for k, v in value.items() if v and f"{key}.{k}" not in known]
        elif value and key not in known:
            names.append(key)
    return names
