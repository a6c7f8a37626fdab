"""What decides a task run's numbers, and ``eval all``'s perplexity protocol: light dataclasses
(no torch) whose fields are also the commands' options."""

from __future__ import annotations

from dataclasses import dataclass

from compress.core.errors import BadInputError
from compress.core.options import option
from compress.core.shared_options import seed_option


@dataclass(frozen=True)
class TaskSettings:
    """Everything besides the model that decides a task's numbers (batch size aside)."""

    limit: int | None = option(  # explicit only; None = all
        None,
        help="Score the first N documents of each task: the head of a set, not representative "
        "(BoolQ's first 50 are 78% yes); prefer --sample.",
    )
    sample: int | None = option(
        None,
        help="Score N documents of each task drawn at random with --seed, recorded per task "
        "(all if neither this nor --limit is set).",
    )
    num_fewshot: int = option(0, help="Examples in the prompt (the paper uses 0).")
    seed: int = seed_option("--sample's draw and lm-eval's few-shot sampling", default=1234)
    bootstrap_iters: int = 1000  # only perplexity's stderr is bootstrapped

    def __post_init__(self) -> None:
        for flag, value in (("--limit", self.limit), ("--sample", self.sample)):
            if value is not None and value < 1:
                raise BadInputError(f"{flag} must be at least 1, got {value}")
        if self.limit is not None and self.sample is not None:
            raise BadInputError("pass --limit or --sample, not both")
        if self.num_fewshot < 0:
            raise BadInputError(f"--num-fewshot must be 0 or more, got {self.num_fewshot}")


@dataclass(frozen=True)
class PerplexityRequest:
    """Protocol overrides; None takes the recipe's value (``max_windows`` 0 = every window)."""

    dataset: str | None = option(
        None, help="Perplexity text (default: the recipe's, else wikipedia)."
    )
    seqlen: int | None = option(None, help="Perplexity window in tokens (default: the recipe's).")
    max_windows: int | None = option(
        None, help="At most this many perplexity windows (0: all; default: the recipe's)."
    )
