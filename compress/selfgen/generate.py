"""Generating self-generated calibration text with the paper's recipe (see :mod:`compress.selfgen`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.compat import library_generation_defaults
from compress.core.errors import BadInputError
from compress.selfgen.inspection import detect_language, known_language
from compress.selfgen.samples import next_draw, read_samples, text_seed, token_lengths

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


def _row_sampler(generators: list[torch.Generator], recipe: Recipe):
    """A logits processor: greedy for the first ``greedy_tokens`` steps, then one draw per row
    from that row's own generator (top-k, temperature, top-p). It returns 0 at the drawn token
    and -inf elsewhere, so ``generate(do_sample=False)`` takes exactly that token."""
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
            if input_ids.shape[1] <= recipe.greedy_tokens:  # (B, 1 + tokens generated so far)
                return scores
            values, index = scores.float().topk(min(recipe.top_k, scores.shape[-1]), dim=-1)
            probs = torch.softmax(values / recipe.temperature, dim=-1)  # (B, k), sorted
            if recipe.top_p < 1.0:  # keep the smallest head whose mass reaches top_p
                probs = probs * (probs.cumsum(-1) - probs < recipe.top_p)
            probs = probs.cpu()
            picks = [
                int(torch.multinomial(probs[row], 1, generator=generator))
                for row, generator in enumerate(generators)
            ]
            chosen = index[torch.arange(len(picks)), torch.tensor(picks, device=index.device)]
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, chosen[:, None], 0.0)

    return RowSampler()


@torch.no_grad()
def generate_ids(model, tokenizer, seeds: list[int], recipe: Recipe) -> list[list[int]]:
    """One batch of texts as token ids (first token included, EOS and padding excluded)."""
    from transformers import GenerationConfig, LogitsProcessorList

    device = model.get_input_embeddings().weight.device
    choices = first_token_choices(model, tokenizer)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    first = [int(choices[torch.randint(len(choices), (1,), generator=g)]) for g in generators]
    stops = stop_ids(model, tokenizer)
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=recipe.max_len - 1,
        eos_token_id=stops or None,
        pad_token_id=stops[0] if stops else 0,
    )
    prompt = torch.tensor(first, device=device)[:, None]  # (B, 1): no padding needed
    with library_generation_defaults(model):
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            generation_config=config,
            logits_processor=LogitsProcessorList([_row_sampler(generators, recipe)]),
        )
    texts = []
    for row in out.tolist():
        end = next((i for i, t in enumerate(row) if i > 0 and t in stops), len(row))
        texts.append(row[:end])
    return texts


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
    """What one ``generate_file`` call did (draws include rejected texts)."""

    texts: int  # lines in the file afterwards
    added: int
    draws: int
    rejected: int
    tokens: int  # generated tokens over all draws
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def texts_per_second(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


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

    Args:
        language: keep only texts ``detect`` assigns this code; None keeps every text.
        max_draws: give up after this many draws in this call (default ``20 * missing + 100``).

    Raises:
        BadInputError: bad counts or seed, a foreign file, or too many rejected texts.
    """
    check_request(n, batch_size, seed)
    from tqdm.auto import tqdm

    samples = read_samples(path, repair=True)
    draw = next_draw(path, samples, seed)
    have, missing = len(samples), max(n - len(samples), 0)
    limit = max_draws if max_draws is not None else 20 * missing + 100
    stats = GenerationStats(have, 0, 0, 0, 0, 0.0)
    start = time.perf_counter()
    bar = tqdm(total=n, initial=min(have, n), unit="text", disable=not progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle, bar:
        while stats.added < missing:
            if stats.draws >= limit:
                raise BadInputError(
                    f"{stats.rejected} of {stats.draws} drawn texts were not {language!r}; "
                    "use another model or --lang any"
                )
            seeds = [text_seed(seed, draw + i) for i in range(batch_size)]
            for text_seed_, ids in zip(seeds, generate_ids(model, tokenizer, seeds, recipe)):
                stats.draws, stats.tokens = stats.draws + 1, stats.tokens + len(ids)
                if stats.added == missing:  # the batch's remaining draws: a rerun redraws them
                    continue
                text = tokenizer.decode(ids)
                lang, score = detect(text)
                if language is not None and lang != language:
                    stats.rejected += 1
                    continue
                line = {"text": text, "seed": text_seed_, "tokens": len(ids)}
                handle.write(json.dumps({**line, "lang": lang, "lang_score": score}) + "\n")
                stats.added += 1
                bar.update(1)
            handle.flush()
            draw += batch_size
            stats.seconds = time.perf_counter() - start
            bar.set_postfix(
                texts_s=f"{stats.texts_per_second:.2f}",
                tokens_s=f"{stats.tokens_per_second:.0f}",
                rejected=stats.rejected,
            )
    stats.texts, stats.seconds = have + stats.added, time.perf_counter() - start
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
        for name in ("added", "draws", "rejected", "tokens", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
    return total
