"""``compress prune`` as a library call: load, calibrate, prune, evaluate, save.

Every stage writes what it measured into the report; the CLI only renders it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from compress.algorithms import distributed
from compress.algorithms.masks import zero_count
from compress.algorithms.quant.grid import QuantGrid
from compress.algorithms.quant.record import RECORD, QuantRecord, write_record
from compress.core.claim import output_lock
from compress.core.config import PruneConfig, SaveFormat
from compress.core.errors import BadInputError, Interrupted, signal_exit_code
from compress.core.io import (
    check_target,
    publish,
    reported_writes,
    staging_folder,
    work_folder,
)
from compress.core.report import (
    RECIPE_NAME,
    REPORT_FORMAT,
    EvaluationSection,
    QuantizationSection,
    Report,
    block_entry,
    evaluation_section,
    hub_section,
    now_iso,
    package_versions,
    perplexity_section,
    quantization_section,
    summary_section,
    write_json_atomic,
    write_report,
)
from compress.data.calibration import (
    EvalText,
    Windows,
    eval_text,
    load_texts,
    load_windows,
    tokenize_stream,
    windows_from_stream,
)
from compress.engine import SELFGEN, Engine, PruneOutcome, WorkFolder
from compress.engine.one_pass import one_pass_applies
from compress.engine.probe import plan_run
from compress.engine.quantize_step import joint
from compress.model.loading import (
    LoadedModel,
    check_seqlen,
    context_length,
    load_model,
    resolve_device,
)
from compress.model.placement import (
    Placement,
    peak_rss_bytes,
    refuse_quantized,
    save_model,
    stored_parameters,
)
from compress.model.plan import Workload

ProgressFn = Callable[[int, int, float], None]


def evaluation_text(config: PruneConfig) -> EvalText:
    """``--eval-dataset`` under its protocol: a local file is scored whole, unless it also feeds
    calibration or the held-out windows; then only its test split, disjoint from both."""
    dataset = config.evaluation.dataset
    shared = dataset in (config.calibration.source, config.reconstruct.holdout)
    return eval_text(dataset, "test" if shared else None)


def evaluate_perplexity(loaded: LoadedModel, config: PruneConfig, text: EvalText) -> dict:
    from evaluators.perplexity import perplexity_of_text

    seqlen = config.evaluation.seqlen or config.calibration.seqlen
    return perplexity_of_text(
        loaded.model, loaded.tokenizer, text, seqlen, config.evaluation.max_windows
    )


def model_summary(loaded: LoadedModel) -> dict:
    model = loaded.model
    return {
        "source": loaded.source,
        "base_model": loaded.base_model,
        "license": loaded.license,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def model_sparsity(model: torch.nn.Module) -> float:
    """Zeros over all parameters (tied weights counted once), offloaded ones read back from
    their store one at a time."""
    zeros = numel = 0
    for _, parameter in stored_parameters(model):
        zeros, numel = zeros + zero_count(parameter), numel + parameter.numel()
    return zeros / numel


def computed_on(model: torch.nn.Module, accelerator: torch.device) -> str:
    """The device the weights live on: the first that is not ``meta`` (an offloaded weight's
    placeholder); ``accelerator`` when every weight is offloaded."""
    devices = (p.device for p in model.parameters() if p.device.type != "meta")
    return str(next(devices, accelerator))


def holdout_windows(loaded: LoadedModel, config: PruneConfig) -> Windows | None:
    """Held-out windows for errors and early stopping (the validation split of --holdout, disjoint
    from the test split perplexity is reported on), or None when nothing asks for them. Uses
    fewer windows than asked when the split is short."""
    recon, calib = config.reconstruct, config.calibration
    if not (recon.errors or recon.early_stop):
        return None
    source = recon.holdout or calib.source
    if source == "none":  # self-generated text only and no --holdout: errors on calibration only
        return None
    stream = tokenize_stream(loaded.tokenizer, load_texts(source, "validation"))
    available = len(stream) // calib.seqlen
    if available == 0:
        raise BadInputError(
            f"held-out text {source!r} (validation split) is shorter than --seqlen {calib.seqlen}; "
            "pass --holdout with a longer source"
        )
    nsamples = min(recon.holdout_nsamples, available)
    return windows_from_stream(stream, nsamples, calib.seqlen, calib.seed, source, "validation")


def workload(config: PruneConfig) -> Workload:
    """What the run holds in RAM beside the weights (for ``--max-memory cpu=`` and the planner's
    RAM bound): its calibration tokens, one batch's, and the pruner's statistics."""
    from compress.algorithms.pruners import PRUNERS

    calib = config.calibration
    generated = int(calib.self_gen) if calib.self_gen and calib.self_gen.isdigit() else 0
    sequences = calib.nsamples + generated
    return Workload(
        tokens=sequences * calib.seqlen,
        batch_tokens=calib.batch_size * calib.seqlen,
        gram_bytes=PRUNERS[config.method.value].gram_bytes,
    )


def checkpoint_recipe(config: PruneConfig) -> dict:
    """The settings a checkpoint must match to be resumed (flags about this attempt excluded)."""
    recipe = config.to_dict()
    for name in (
        "resume",
        "checkpoint_every",
        "overwrite",
        "evaluation",
        "push_to_hub",
        "hub_repo_id",
        "save_format",
    ):
        recipe.pop(name)
    return recipe


def run_prune(
    config: PruneConfig, on_block: ProgressFn | None = None, log: Callable[[str], None] = print
) -> dict:
    """Prune ``config.model`` as configured and write the output folder; return the report.

    Under ``config.distributed`` every rank calibrates on its shard of the windows, statistics
    and gradients are summed across ranks, and rank 0 alone evaluates and writes, holding the
    output's lock (:mod:`compress.core.claim`) for the whole run.

    Raises:
        BadInputError: any invalid input, before heavy work where it can be known then.
        OutputError: the output cannot be written (found before loading where it can be).
        Interrupted: SIGINT or SIGTERM; the message says where ``--resume`` continues.
    """
    refuse_quantized(config.load_in_8bit, config.load_in_4bit)
    if config.save_format is SaveFormat.compressed:
        from exporters.compressed import require_writer

        require_writer(quantized=config.quantize.enabled)
    target = Path(config.output)
    check_target(target, config.overwrite)
    device = distributed.init_from_env() if config.distributed else None
    main = distributed.is_main()
    if not main:
        log, on_block = (lambda message: None), None
    work = WorkFolder(work_folder(target))
    with output_lock(target) if main else nullcontext():
        check_target(target, config.overwrite)  # again, now that no other run can write it
        try:
            return _prune_and_save(config, device, work, on_block, log)
        except KeyboardInterrupt as exc:
            raise Interrupted(_resume_hint(work), signal_exit_code(exc)) from None


def _resume_hint(work: WorkFolder) -> str:
    state = work.read_state()
    if state is None:
        return "interrupted before the first checkpoint; nothing to resume"
    return f"interrupted; --resume continues from block {state['next_block']}"


def _prune_and_save(
    config: PruneConfig,
    device: torch.device | None,
    work: WorkFolder,
    on_block: ProgressFn | None,
    log: Callable[[str], None],
) -> dict:
    """:func:`run_prune` once the output is claimed."""
    started = time.perf_counter()
    main = distributed.is_main()
    target = Path(config.output)
    log(f"loading {config.model or 'the embedded SmolLM2-135M-Instruct'}")
    load = workload(config)
    placement = Placement.from_flags(
        config.device_map, config.max_memory, config.offload_folder, load
    )
    device_name = str(device) if device is not None else config.device
    loaded = load_model(
        config.model,
        device_name,
        config.dtype,
        config.trust_remote_code,
        placement,
        output=config.output,
        log=log,
        workload=load,
    )
    calib = config.calibration
    check_seqlen(loaded, calib.seqlen)
    if config.evaluation.seqlen:
        check_seqlen(loaded, config.evaluation.seqlen, "--eval-seqlen")
    work.start(config.resume, log)
    windows = (
        None
        if calib.source == "none"
        else load_windows(loaded.tokenizer, calib.source, calib.nsamples, calib.seqlen, calib.seed)
    )
    generated, generation = self_generated_windows(loaded, config, work, log)
    holdout = holdout_windows(loaded, config)
    accelerator = resolve_device(device_name)
    estimate = None
    if main and not config.resume:  # a resumed run's remaining work is known only later
        plan = plan_run(
            loaded.model,
            config,
            accelerator,
            elapsed=time.perf_counter() - started,
            one_pass=one_pass_applies(
                config,
                statistics_samples(config, windows, generated),
                loaded.model.config,
                calib.nsamples,
                calib.seqlen,
                accelerator,
            ),
            holdout_nsamples=0 if holdout is None else len(holdout.ids),
        )
        log(plan.line)
        estimate = plan.section
    text = evaluation_text(config) if config.evaluation.enabled else None
    if text and main:
        log(f"perplexity before pruning on {text.source} ({text.split} split)")
        before = evaluate_perplexity(loaded, config, text)

    log(
        f"pruning {config.method.value} {config.pattern} at {config.sparsity:.0%}, reconstruction {config.reconstruct.technique.value}"
    )
    outcome = run_engine(loaded, config, windows, generated, holdout, work, accelerator, on_block)

    evaluation = evaluation_section()
    if text and main:
        log("perplexity after pruning")
        after = evaluate_perplexity(loaded, config, text)
        evaluation = evaluation_section(perplexity_section(after, before["perplexity"]))
    calibration = (windows, generated, generation)
    built = partial(
        build_report, loaded, config, calibration, holdout, outcome, evaluation, started
    )

    def finish(model_sparsity: float) -> Report:
        report = built(model_sparsity)
        if estimate is not None:
            report["estimate"] = estimate
        if config.quantize.enabled:
            report["quantization"] = quantization_report(config, outcome)
        return report

    if main:
        report = save_output(loaded, config, finish, target, work, outcome.scales)
        work.remove()
        if config.push_to_hub:
            from exporters.hub import push_folder

            log(f"pushing {target} to the Hub as {config.hub_repo_id}")
            commit = push_folder(target, config.hub_repo_id)
            report["hub"] = hub_section(config.hub_repo_id, commit)
    else:
        report = finish(model_sparsity(loaded.model))
    distributed.barrier()
    return report


def self_generated_windows(
    loaded: LoadedModel, config: PruneConfig, work: WorkFolder, log: Callable[[str], None]
) -> tuple[Windows | None, dict | None]:
    """Windows of self-generated text (the paper's recipe), generated now into the work folder
    (so ``--resume`` reuses them) or read from a ``compress calib generate`` file, and the
    generation's counts and rates for report.json (None for a file). ``--self-gen N`` asks for
    N windows: the model writes texts until N reach ``--seqlen`` tokens and one window is taken
    from each, so the file holds N texts or more. Under ``--distributed`` rank 0 generates and
    the other ranks read its file.

    The counts are kept in the work folder beside the texts, so a resumed run reports the work
    of every attempt, not the zero texts its own call added."""
    calib = config.calibration
    if calib.self_gen is None:
        return None, None
    from compress.data.selfgen import GenerationStats, Recipe, generate_long_texts, selfgen_windows

    generation = None
    if calib.self_gen.isdigit():
        count, path = int(calib.self_gen), work.selfgen
        max_len = min(2 * calib.seqlen, context_length(loaded.model.config) or 2 * calib.seqlen)
        if work.writes():
            log(
                f"generating texts with the model itself until {count} reach {calib.seqlen} "
                f"tokens (up to {max_len} each): one calibration window from each"
            )
            work.path.mkdir(parents=True, exist_ok=True)
            stats = generate_long_texts(
                loaded.model,
                loaded.tokenizer,
                path,
                count,
                calib.seqlen,
                Recipe(max_len=max_len),
                seed=calib.seed,
                batch_size=calib.self_gen_batch,
            )
            if work.selfgen_stats.exists():
                earlier = GenerationStats.from_record(json.loads(work.selfgen_stats.read_text()))
                earlier.add(stats)
                stats = earlier
            generation = stats.describe()
            write_json_atomic(work.selfgen_stats, generation)
            log(
                f"self-generated {stats.added} texts in {stats.seconds:.0f} s: "
                f"{stats.texts_per_second:.2f} accepted texts/s, {stats.tokens_per_second:.0f} "
                f"tokens/s, {stats.rejection_rate:.0%} of {stats.draws} drawn rejected"
            )
        distributed.barrier()
    else:
        count, path = None, Path(calib.self_gen)
    windows = selfgen_windows(loaded.tokenizer, path, count, calib.seqlen, calib.seed)
    if count is not None:  # named as the output ships it, not by the work folder it was made in
        windows = replace(windows, source=SELFGEN)
    return windows, generation


def statistics_samples(
    config: PruneConfig, windows: Windows | None, generated: Windows | None
) -> int | None:
    """How many calibration sequences feed the pruners' statistics: the real windows only
    with ``--stats-from real`` beside self-generated ones, else all (None)."""
    real_only = (
        config.calibration.stats_from == "real" and windows is not None and generated is not None
    )
    return len(windows.ids) if real_only else None


def run_engine(
    loaded: LoadedModel,
    config: PruneConfig,
    windows: Windows | None,
    generated: Windows | None,
    holdout: Windows | None,
    work: WorkFolder,
    accelerator: torch.device,
    on_block: ProgressFn | None,
) -> PruneOutcome:
    """Run the engine, checkpointing into the work folder (one process) or with every batch
    shared across ranks (``--distributed``; then no checkpoints, see
    :meth:`WorkFolder.checkpoints`). Real windows come first; with ``--stats-from real`` only
    they feed the pruners' statistics."""
    parts = [w.ids for w in (windows, generated) if w is not None]
    calib_ids, holdout_ids = torch.cat(parts), None if holdout is None else holdout.ids
    stats_samples = statistics_samples(config, windows, generated)
    if distributed.world_size() > 1 and stats_samples is not None:
        raise BadInputError("--distributed with self-generated text needs --stats-from all")
    engine = Engine(loaded.model, config, work, stats_samples, accelerator, keep_masks=False)
    return engine.run(calib_ids, holdout_ids, checkpoint_recipe(config), config.resume, on_block)


def calibration_sources(
    windows: Windows | None, generated: Windows | None, generation: dict | None
) -> list[dict]:
    """report.json's calibration sources; the self-generated one with its generation's counts
    and rates when this run generated it."""
    sources = []
    if windows is not None:
        sources.append(windows.describe("real"))
    if generated is not None:
        source = generated.describe("self-generated")
        sources.append(source if generation is None else {**source, "generation": generation})
    return sources


def build_report(
    loaded: LoadedModel,
    config: PruneConfig,
    calibration: tuple[Windows | None, Windows | None, dict | None],
    holdout: Windows | None,
    outcome: PruneOutcome,
    evaluation: EvaluationSection,
    started: float,
    sparsity: float,
) -> Report:
    """report.json: what was done and measured (schema in :mod:`compress.core.report`);
    ``calibration`` is (real windows, self-generated windows, the generation's stats);
    ``sparsity``: zeros over all parameters, counted as the weights were saved."""
    blocks = [block_entry(**block) for block in outcome.blocks]
    return {
        "format": REPORT_FORMAT,
        "model": model_summary(loaded),
        "recipe": config.to_dict(),
        "calibration": {
            "sources": calibration_sources(*calibration),
            "stats_from": config.calibration.stats_from.value,
            "holdout": None if holdout is None else holdout.describe("real"),
            "processes": distributed.world_size(),
        },
        "layers": outcome.layers,
        "blocks": blocks,
        "summary": summary_section(
            method=config.method.value,
            pattern=config.pattern,
            target_sparsity=config.sparsity,
            layers=outcome.layers,
            blocks=blocks,
            model_sparsity=sparsity,
            prune_seconds=outcome.seconds,
            seconds=time.perf_counter() - started,
            peak_rss_bytes=peak_rss_bytes(),
            device=computed_on(loaded.model, resolve_device(config.device)),
        ),
        "evaluation": evaluation,
        "versions": package_versions(),
        "created": now_iso(),
    }


def quantization_report(config: PruneConfig, outcome: PruneOutcome) -> QuantizationSection:
    q = config.quantize
    return quantization_section(
        q.bits.value,
        q.bit_count,
        q.group_size,
        q.quantizer.value,
        joint(config),
        outcome.layers,
        RECORD,
    )


def write_quantization_record(
    folder: Path, config: PruneConfig, scales: dict[str, torch.Tensor]
) -> None:
    """``quantization.safetensors``: each quantized layer's scales under its weight's name."""
    q = config.quantize
    named = {f"{name}.weight": s for name, s in scales.items()}
    grid = QuantGrid(q.bit_count, q.group_size)
    write_record(folder, QuantRecord(grid, q.quantizer.value, named))


def save_output(
    loaded: LoadedModel,
    config: PruneConfig,
    finish: Callable[[float], Report],
    target: Path,
    work: WorkFolder,
    scales: dict[str, torch.Tensor] | None = None,
) -> Report:
    """Write model, tokenizer, recipe, report and model card to a staging folder, then publish;
    return the report, which ``finish`` builds from the model's sparsity once the weights are
    written (counted, and refused if one holds NaN or Inf, in the pass that writes them:
    :func:`compress.model.placement.save_model`). A quantized run's ``scales`` (by layer) go
    beside the weights in the quantization record the exporters read the integers back with.

    With ``--save-format compressed`` the dense staging folder is converted to compressed-tensors
    (and checked bit-identical) before the card is written, so the card, the published folder
    and the Hub push all hold what was saved. A failed write removes the staging folder and keeps
    the work folder, whose last checkpoint lets ``--resume`` finish without pruning again."""
    staging = staging_folder(target)
    shutil.rmtree(staging, ignore_errors=True)
    then = "free space or choose another --output, then rerun with --resume to save without pruning again"
    try:
        with reported_writes(target, then):
            report = _write_staging(loaded, config, finish, staging, work, scales or {})
            check_target(target, config.overwrite)
            publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _write_staging(
    loaded: LoadedModel,
    config: PruneConfig,
    finish: Callable[[float], Report],
    staging: Path,
    work: WorkFolder,
    scales: dict[str, torch.Tensor],
) -> Report:
    staging.mkdir(parents=True)
    report = finish(save_model(loaded.model, staging).sparsity)
    if scales:
        write_quantization_record(staging, config, scales)
    loaded.tokenizer.save_pretrained(staging)
    write_json_atomic(staging / RECIPE_NAME, {**config.to_dict(), "versions": report["versions"]})
    write_report(staging, report)
    if work.selfgen.is_file():  # the texts behind the self-generated tokens
        shutil.copy2(work.selfgen, staging / SELFGEN)
    if config.save_format is SaveFormat.compressed:
        from exporters.compressed import convert_in_place

        record = convert_in_place(staging)
        report["artifacts"] = {record["format"]: record}
    from cards.builder import write_card

    target = Path(config.output)
    write_card(staging, config.hub_repo_id if config.push_to_hub else None, published_as=target)
    return report
