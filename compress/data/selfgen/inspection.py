"""What self-generated texts are: their language (py3langid), code-likeness, a file's summary."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

from compress.core.errors import BadInputError
from compress.data.selfgen.samples import read_samples, split_seed


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


def known_language(code: str) -> bool:
    """Whether ``code`` is a language py3langid can identify."""
    return code in _identifier().labels


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
