"""The JSONL file of self-generated texts: its lines, their seeds, windows taken from it."""

from __future__ import annotations

from pathlib import Path

import torch

from compress.core.errors import BadInputError
from compress.data.calibration import Windows, jsonl_records

DRAW_BITS = 32


def text_seed(base_seed: int, draw: int) -> int:
    """The seed of draw number ``draw`` of a run seeded with ``base_seed``."""
    return (base_seed << DRAW_BITS) | draw


def split_seed(seed: int) -> tuple[int, int]:
    """``(base_seed, draw)`` of a text's seed."""
    return seed >> DRAW_BITS, seed & ((1 << DRAW_BITS) - 1)


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
    for number, sample in jsonl_records(data[:complete].decode("utf-8")):
        if (
            not isinstance(sample, dict)
            or not isinstance(sample.get("text"), str)
            or not isinstance(sample.get("seed"), int)
        ):
            raise BadInputError(
                f"{path}:{number} is not a self-generated sample (a JSON object with a string "
                "text and an integer seed); pass another file"
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


def token_lengths(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text as a calibration window sees them (no special tokens added)."""
    return [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"] for t in texts]


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
