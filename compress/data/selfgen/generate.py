"""Generating self-generated calibration text with the paper's recipe (see :mod:`compress.data.selfgen`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from compress.data.selfgen.decoding import Picker, Row, decode
from compress.data.selfgen.inspection import detect_language, known_language
from compress.data.selfgen.samples import (
    next_draw,
    read_samples,
    split_seed,
    text_seed,
    token_lengths,
)

LanguageFn = Callable[[str], tuple[str, float]]


@dataclass(frozen=True)
class Recipe:
    """The paper's generation settings; ``max_len`` counts every token of a text."""

    max_len: int = 2048
    greedy_tokens: int = 4
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_len < self.greedy_tokens + 2:
            raise BadInputError(
                f"--max-len {self.max_len} is too short: use at least {self.greedy_tokens + 2}"
            )
        if self.temperature <= 0 or self.top_k < 1 or not 0 < self.top_p <= 1:
            raise BadInputError("need temperature > 0, top-k >= 1 and top-p in (0, 1]")


def first_token_choices(model, tokenizer) -> torch.Tensor:
    """Token ids a text may start with: the vocabulary both sides know, special tokens excluded."""
    size = min(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    special = set(tokenizer.all_special_ids)
    special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    keep = torch.ones(size, dtype=torch.bool)
    keep[[i for i in special if i < size]] = False
    return keep.nonzero().flatten()


def stop_ids(model, tokenizer) -> list[int]:
    """End-of-text ids: the model's generation config and the tokenizer's, together."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def _picker(recipe: Recipe) -> Picker:
    """Each row's next token: greedy while a row holds at most ``greedy_tokens`` tokens (the
    first token included), then one draw from that row's own generator (top-k, temperature,
    top-p), so that a text does not depend on the other rows of its batch."""

    def pick(logits: torch.Tensor, rows: list[Row]) -> list[int]:
        tokens = logits.argmax(-1).tolist()
        sampled = [i for i, row in enumerate(rows) if len(row.ids) > recipe.greedy_tokens]
        if not sampled:
            return tokens
        values, index = logits[sampled].topk(min(recipe.top_k, logits.shape[-1]), dim=-1)
        probs = torch.softmax(values / recipe.temperature, dim=-1)  # (rows, k), sorted
        if recipe.top_p < 1.0:  # keep the smallest head whose mass reaches top_p
            probs = probs * (probs.cumsum(-1) - probs < recipe.top_p)
        probs, index = probs.cpu(), index.cpu()
        for j, i in enumerate(sampled):
            draw = torch.multinomial(probs[j], 1, generator=rows[i].generator)
            tokens[i] = int(index[j, draw])
        return tokens

    return pick


def sample_texts(
    model, tokenizer, recipe: Recipe, batch_size: int, next_seed: Callable[[], int | None]
) -> Iterator[Row]:
    """Texts as they end, written ``batch_size`` at a time with continuous batching
    (:func:`compress.data.selfgen.decoding.decode`); ``next_seed`` gives the seed of each new text
    (None: no new text now). A row's ``ids`` hold its text's tokens, first token included, EOS
    excluded."""
    choices = first_token_choices(model, tokenizer)

    def next_row() -> Row | None:
        seed = next_seed()
        if seed is None:
            return None
        generator = torch.Generator().manual_seed(seed)
        first = int(choices[torch.randint(len(choices), (1,), generator=generator)])
        return Row(seed, generator, [first])

    stops = set(stop_ids(model, tokenizer))
    return decode(model, batch_size, recipe.max_len, stops, _picker(recipe), next_row)


def generate_ids(
    model, tokenizer, seeds: list[int], recipe: Recipe, batch_size: int | None = None
) -> list[list[int]]:
    """The texts of ``seeds`` as token ids, in that order (``batch_size`` default: all at once)."""
    pending = iter(seeds)
    rows = sample_texts(
        model, tokenizer, recipe, batch_size or len(seeds), lambda: next(pending, None)
    )
    texts = {row.seed: row.ids for row in rows}
    return [texts[seed] for seed in seeds]


def check_request(n: int, batch_size: int, seed: int, language: str | None = None) -> None:
    """Validate generation settings before any model is loaded.

    Raises:
        BadInputError: a count below 1, a seed outside [0, 2**31), an unknown language code.
    """
    if n < 1 or batch_size < 1:
        raise BadInputError(f"need --n >= 1 and --batch-size >= 1, got {n} and {batch_size}")
    if not 0 <= seed < 2**31:
        raise BadInputError(f"--seed {seed} must lie in [0, 2**31)")
    if language is not None and not known_language(language):
        raise BadInputError(f"--lang {language!r} is not a py3langid code (e.g. en, de); or 'any'")


@dataclass
class GenerationStats:
    """What one ``generate_file`` call did: ``draws`` counts the texts the model finished,
    rejected ones included; ``tokens`` their tokens."""

    texts: int  # lines in the file afterwards
    added: int
    draws: int
    rejected: int
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def texts_per_second(self) -> float:
        """Accepted texts per second."""
        return self.added / self.seconds if self.seconds else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.draws if self.draws else 0.0

    def describe(self) -> dict:
        """The counts and rates, for report.json and benchmark JSON."""
        rates = ("texts_per_second", "tokens_per_second", "rejection_rate")
        return {**asdict(self), **{name: getattr(self, name) for name in rates}}

    @classmethod
    def from_record(cls, record: dict) -> GenerationStats:
        """The stats :meth:`describe` wrote (its rates are recomputed, not read)."""
        return cls(**{f.name: record[f.name] for f in fields(cls)})

    def add(self, other: GenerationStats) -> None:
        """Count ``other``'s work in (a later call on the same file): ``texts`` is ``other``'s,
        the file's size after it."""
        for name in ("added", "draws", "rejected", "tokens", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.texts = other.texts


class _InDrawOrder:
    """Writes finished texts in draw order: a text that ends before an earlier draw waits for
    it, so the file, and a rerun that resumes it, do not depend on which rows finish first."""

    def __init__(self, handle, first_draw: int, wanted: int):
        self.handle, self.next, self.wanted = handle, first_draw, wanted
        self.waiting: dict[int, dict | None] = {}
        self.written = 0

    def add(self, draw: int, line: dict | None) -> int:
        """Record draw ``draw`` (None: rejected); returns how many lines it let through."""
        self.waiting[draw] = line
        before = self.written
        while self.next in self.waiting and self.written < self.wanted:
            line = self.waiting.pop(self.next)
            self.next += 1
            if line is not None:
                self.handle.write(json.dumps(line) + "\n")
                self.written += 1
        self.handle.flush()
        return self.written - before


def _judged(text: str, row: Row, detect: LanguageFn, language: str | None) -> dict | None:
    """The file line of a finished text, or None when its language is not ``language``."""
    lang, score = detect(text)
    if language is not None and lang != language:
        return None
    return {
        "text": text,
        "seed": row.seed,
        "tokens": len(row.ids),
        "lang": lang,
        "lang_score": score,
    }


def generate_file(
    model,
    tokenizer,
    path: Path,
    n: int,
    recipe: Recipe,
    seed: int = 0,
    batch_size: int = 16,
    language: str | None = "en",
    detect: LanguageFn = detect_language,
    max_draws: int | None = None,
    progress: bool = True,
) -> GenerationStats:
    """Append self-generated texts to ``path`` until it holds ``n`` (resumes a partial file).
    A rejected text's row goes to the next draw at once; no new draw starts once the accepted
    texts and those still being written could fill the file.

    Args:
        language: keep only texts ``detect`` assigns this code; None keeps every text.
        max_draws: give up after this many draws in this call (default ``20 * missing + 100``).

    Raises:
        BadInputError: bad counts or seed, a foreign file, or too many rejected texts.
    """
    check_request(n, batch_size, seed)
    from tqdm.auto import tqdm

    samples = read_samples(path, repair=True)
    first_draw = next_draw(path, samples, seed)
    have, missing = len(samples), max(n - len(samples), 0)
    limit = max_draws if max_draws is not None else 20 * missing + 100
    stats = GenerationStats(have, 0, 0, 0, 0, 0.0)
    started, accepted = 0, 0

    def next_seed() -> int | None:
        nonlocal started
        if accepted + started - stats.draws >= missing or started >= limit:
            return None
        started += 1
        return text_seed(seed, first_draw + started - 1)

    start = time.perf_counter()
    bar = tqdm(total=n, initial=min(have, n), unit="text", disable=not progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle, bar:
        order = _InDrawOrder(handle, first_draw, missing)
        rows = sample_texts(model, tokenizer, recipe, batch_size, next_seed)
        with contextlib.closing(rows):
            while stats.added < missing and (row := next(rows, None)) is not None:
                line = _judged(tokenizer.decode(row.ids), row, detect, language)
                stats.draws, stats.tokens = stats.draws + 1, stats.tokens + len(row.ids)
                stats.rejected += line is None
                accepted += line is not None
                bar.update(order.add(split_seed(row.seed)[1], line))
                stats.added, stats.seconds = order.written, time.perf_counter() - start
                bar.set_postfix(
                    texts_s=f"{stats.texts_per_second:.2f}",
                    tokens_s=f"{stats.tokens_per_second:.0f}",
                    rejected=f"{stats.rejection_rate:.0%}",
                )
    stats.texts, stats.seconds = have + stats.added, time.perf_counter() - start
    if stats.added < missing:
        raise BadInputError(
            f"{stats.rejected} of {stats.draws} drawn texts were not {language!r}; "
            "use another model or --lang any"
        )
    return stats


def generate_long_texts(
    model,
    tokenizer,
    path: Path,
    count: int,
    seqlen: int,
    recipe: Recipe,
    rounds: int = 4,
    **options,
) -> GenerationStats:
    """Grow ``path`` until ``count`` of its texts hold at least ``seqlen`` tokens, so that
    :func:`selfgen_windows` can take ``count`` windows; ``options`` go to :func:`generate_file`.
    Each round asks for as many more texts as the share of long texts so far suggests.

    Raises:
        BadInputError: ``max_len`` below ``seqlen``, or still too few long texts after ``rounds``.
    """
    if recipe.max_len < seqlen:
        raise BadInputError(f"--max-len {recipe.max_len} must be at least --seqlen {seqlen}")
    total = GenerationStats(0, 0, 0, 0, 0, 0.0)
    for round_ in range(rounds + 1):
        samples = read_samples(path, repair=True)
        long = sum(len(x) >= seqlen for x in token_lengths(tokenizer, [s["text"] for s in samples]))
        total.texts = len(samples)
        if long >= count:
            break
        if round_ == rounds:
            raise BadInputError(
                f"{path}: only {long} of {len(samples)} texts reach {seqlen} tokens after "
                f"{rounds} rounds; raise --max-len or lower --seqlen"
            )
        share = max(long / len(samples), 0.1) if samples else 0.5
        stats = generate_file(
            model, tokenizer, path, len(samples) + int((count - long) / share) + 1, recipe,
            **options,
        )  # fmt: skip
        total.add(stats)
    return total
