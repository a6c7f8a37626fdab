"""Self-generated calibration text: the model writes its own calibration data.

Paper: Shin et al., "Rethinking Pruning Large Language Models: Benefits and Pitfalls of
Reconstruction Error Minimization" (EMNLP 2024, arXiv 2406.15524), the mitigation for
reconstruction overfitting. Recipe per text:

1. first token uniformly random from the vocabulary, special tokens excluded;
2. the next ``greedy_tokens`` (4) tokens greedy (argmax of the model's logits);
3. the rest sampled (temperature 1.0, top-k 50, top-p 1.0) until EOS or ``max_len`` tokens;
4. kept only if a language identifier (py3langid, its model ships in the wheel) says English;
   otherwise the text is rejected and another one is drawn.

Each text has its own seed, ``seed = (base_seed << 32) | draw``, which seeds a CPU generator for
its first token and every sampling step. A batch is one ``model.generate`` call (KV cache) whose
logits processor samples each row with that row's generator, so a text does not depend on the
other texts of its batch: regenerating one seed alone gives the same text, up to the float
rounding differences that another batch shape can cause.

Output: JSONL, one line per kept text, ``{text, seed, tokens, lang, lang_score}``, appended as
texts are accepted; a rerun continues the draws after the last recorded seed until the file
holds ``n`` texts, and drops a partially written last line first.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from compress.calibration import Windows
from compress.core.errors import BadInputError

DRAW_BITS = 32
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


def text_seed(base_seed: int, draw: int) -> int:
    """The seed of draw number ``draw`` of a run seeded with ``base_seed``."""
    return (base_seed << DRAW_BITS) | draw


def split_seed(seed: int) -> tuple[int, int]:
    """``(base_seed, draw)`` of a text's seed."""
    return seed >> DRAW_BITS, seed & ((1 << DRAW_BITS) - 1)


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
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        generation_config=config,
        logits_processor=LogitsProcessorList([_row_sampler(generators, recipe)]),
        use_model_defaults=False,
    )
    texts = []
    for row in out.tolist():
        end = next((i for i, t in enumerate(row) if i > 0 and t in stops), len(row))
        texts.append(row[:end])
    return texts


@lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as exc:
        raise BadInputError("language filtering needs py3langid: pip install py3langid") from exc
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """ISO 639-1 code and probability from py3langid (97 languages, naive Bayes on n-grams)."""
    lang, score = _identifier().classify(text)
    return lang, float(score)


# -- the JSONL file ---------------------------------------------------------------------------
def read_samples(path: Path, repair: bool = False) -> list[dict]:
    """The complete lines of ``path``. A last line without its newline (an interrupted write) is
    ignored, and cut off the file when ``repair``.

    Raises:
        BadInputError: a complete line that is not a self-generated sample.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if repair and complete < len(data):
        with path.open("r+b") as handle:
            handle.truncate(complete)
    samples = []
    for number, line in enumerate(data[:complete].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError:
            sample = None
        if not isinstance(sample, dict) or not {"text", "seed"} <= sample.keys():
            raise BadInputError(
                f"{path}:{number} is not a self-generated sample (a JSON object with text and "
                "seed); pass another file"
            )
        samples.append(sample)
    return samples


def next_draw(path: Path, samples: list[dict], base_seed: int) -> int:
    """The draw after the last one recorded in ``samples`` (0 for an empty file).

    Raises:
        BadInputError: the file was generated with another base seed.
    """
    if not samples:
        return 0
    bases = {split_seed(s["seed"])[0] for s in samples}
    if bases != {base_seed}:
        raise BadInputError(
            f"{path} was generated with --seed {sorted(bases)[0]}; pass that seed to continue it "
            "or write to another --output"
        )
    return max(split_seed(s["seed"])[1] for s in samples) + 1


def check_request(n: int, batch_size: int, seed: int, language: str | None = None) -> None:
    """Validate generation settings before any model is loaded.

    Raises:
        BadInputError: a count below 1, a seed outside [0, 2**31), an unknown language code.
    """
    if n < 1 or batch_size < 1:
        raise BadInputError(f"need --n >= 1 and --batch-size >= 1, got {n} and {batch_size}")
    if not 0 <= seed < 2**31:
        raise BadInputError(f"--seed {seed} must lie in [0, 2**31)")
    if language is not None and language not in _identifier().labels:
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


def token_lengths(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as a calibration window sees them (no special tokens added)."""
    return [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]


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


# -- looking at a file -----------------------------------------------------------------------
CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |#include|function\b|return\b|public |private |"
    r"var |let |const |if ?\(|for ?\(|while ?\(|[{}]|</?[A-Za-z][\w-]*[ >])"
)
CODE_SYMBOLS = frozenset("{}[]()<>;=#$\\/*_|&")


def looks_like_code(text: str) -> bool:
    """A simple heuristic: code if at least 30% of the non-empty lines start like code (a
    keyword such as ``def``/``import``/``return``, a brace, an HTML tag) or at least 8% of the
    non-space characters are symbols from ``{}[]()<>;=#$\\/*_|&`` (English prose has ~1-2%)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    code_lines = sum(bool(CODE_LINE.match(line)) for line in lines)
    chars = [c for c in text if not c.isspace()]
    symbols = sum(c in CODE_SYMBOLS for c in chars)
    return code_lines >= 0.3 * len(lines) or symbols >= 0.08 * len(chars)


def length_histogram(lengths: list[int]) -> list[tuple[str, int]]:
    """Counts per power-of-two bucket of token lengths: 1-63, 64-127, 128-255, ..."""
    if not lengths:
        return []
    edges = [1, 64]
    while edges[-1] <= max(lengths):
        edges.append(edges[-1] * 2)
    return [
        (f"{lo}-{hi - 1}", sum(lo <= x < hi for x in lengths)) for lo, hi in zip(edges, edges[1:])
    ]


def inspect(path: Path, top: int = 10) -> dict:
    """Counts, length histogram, language share, most frequent opening words (the first
    whitespace-separated token of each text) and the share of code-like texts of a file.

    Raises:
        BadInputError: the file does not exist or holds no sample.
    """
    if not path.is_file():
        raise BadInputError(f"{path} does not exist; write it with compress calib generate")
    samples = read_samples(path)
    if not samples:
        raise BadInputError(f"{path} holds no complete sample")
    lengths = [int(s.get("tokens", 0)) for s in samples]
    languages = Counter(s.get("lang", "?") for s in samples)
    openings = Counter(s["text"].split()[0] if s["text"].split() else "" for s in samples)
    return {
        "file": str(path),
        "texts": len(samples),
        "tokens": {
            "total": sum(lengths),
            "mean": sum(lengths) / len(lengths),
            "min": min(lengths),
            "max": max(lengths),
        },
        "length_histogram": length_histogram(lengths),
        "languages": {lang: count / len(samples) for lang, count in languages.most_common()},
        "opening_tokens": openings.most_common(top),
        "code_share": sum(looks_like_code(s["text"]) for s in samples) / len(samples),
        "seeds": sorted({split_seed(s["seed"])[0] for s in samples}),
    }


# -- calibration windows ---------------------------------------------------------------------
def selfgen_windows(tokenizer, path: Path, nsamples: int | None, seqlen: int, seed: int) -> Windows:
    """Random windows of ``seqlen`` tokens, one from each of ``nsamples`` randomly chosen texts
    of at least ``seqlen`` tokens (all of them when ``nsamples`` is None), as the paper does.

    Raises:
        BadInputError: missing file, or fewer long-enough texts than windows asked.
    """
    if not path.is_file():
        raise BadInputError(f"{path} does not exist; write it with compress calib generate")
    texts = [s["text"] for s in read_samples(path)]
    ids = token_lengths(tokenizer, texts)
    long = [torch.tensor(x, dtype=torch.long) for x in ids if len(x) >= seqlen]
    want = len(long) if nsamples is None else nsamples
    if want < 1 or len(long) < want:
        raise BadInputError(
            f"{path}: {len(long)} of {len(texts)} texts have at least {seqlen} tokens, "
            f"{want or 'none'} windows asked; generate more or longer texts "
            "(compress calib generate --n/--max-len) or lower --seqlen"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(long), generator=generator)[:want].sort().values.tolist()
    windows = []
    for i in chosen:
        start = int(torch.randint(len(long[i]) - seqlen + 1, (1,), generator=generator))
        windows.append(long[i][start : start + seqlen])
    available = sum(len(x) for x in long)
    return Windows(torch.stack(windows), str(path), "generated", seed, available)
