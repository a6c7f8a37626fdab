"""Tokenized calibration text, kept on disk: the same text and tokenizer are tokenized once.

Tokenizing the embedded Wikipedia train split (2.3 MB, 507k tokens) takes about 2 s of every
run, as much as pruning a few blocks of the embedded model. The stream is stored under the
cache folder (``$COMPRESS_CACHE/tokens``, ``~/.cache/compress/tokens`` by default) as int32
``.npy``, named by a SHA-256 of the text, the tokenizer's full serialisation (vocabulary,
merges, normalisers, added tokens) and the ``tokenizers`` version, so any change to one of
them is a new entry, never a stale one. Slow (pure-Python) tokenizers have no serialisation
to key on and are not cached. ``COMPRESS_TOKEN_CACHE=0`` turns the cache off. A file that
cannot be read is tokenized again and rewritten; one that cannot be written (read-only disk)
is skipped: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from compress.core.errors import OutputError
from compress.core.io import atomic_file


def _enabled() -> bool:
    return os.environ.get("COMPRESS_TOKEN_CACHE", "1") not in ("0", "false", "no")


def cache_key(tokenizer, text: str) -> str | None:
    """The entry's name for ``text`` under ``tokenizer``; None where the tokenizer cannot be
    fingerprinted (no fast backend)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    import tokenizers

    digest = hashlib.sha256()
    for part in (type(tokenizer).__name__, tokenizers.__version__, backend.to_str()):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _folder() -> Path:
    from compress.model.loading import cache_dir

    return cache_dir() / "tokens"


def cached_tokens(tokenizer, text: str, tokenize: Callable[[str], list[int]]) -> torch.Tensor:
    """``tokenize(text)`` as a 1-D LongTensor, from the cache when it holds this text and
    tokenizer, else computed and stored (atomically: a reader never sees half a file)."""
    key = cache_key(tokenizer, text) if _enabled() else None
    if key is None:
        return torch.tensor(tokenize(text), dtype=torch.long)
    path = _folder() / f"{key}.npy"
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.int64))
    except (OSError, ValueError):  # absent, truncated or not an array: tokenize again
        pass
    stream = torch.tensor(tokenize(text), dtype=torch.long)
    if not stream.numel() or int(stream.max()) < 2**31:  # int32 holds every id
        _store(path, stream)
    return stream


def _store(path: Path, stream: torch.Tensor) -> None:
    """Write ``stream`` to ``path`` atomically; give up quietly where the disk refuses."""
    try:
        with atomic_file(path) as temporary, temporary.open("wb") as f:
            np.save(f, stream.numpy().astype(np.int32), allow_pickle=False)
    except (OSError, OutputError):  # a cache is optional: the stream is in hand
        pass
