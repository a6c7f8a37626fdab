"""The folder's tokenizer written into the GGUF: a byte-level BPE vocabulary (llama.cpp's
``gpt2`` tokenizer model, as SmolLM2, Llama 3 and Qwen2 use), its merges and special tokens.

llama.cpp splits text before BPE with the regexes of a named pre-tokenizer
(``tokenizer.ggml.pre``); the name is read off the folder's ``tokenizer.json`` pre-tokenizer,
matched against the ones llama.cpp names for these families, so both split text alike. An
unknown one is refused rather than written under a name that splits differently.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from compress.core.errors import BadInputError

# the published split patterns of Llama 3's and Qwen2's tokenizers (their tokenizer.json)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {  # the pre-tokenizer's steps -> llama.cpp's name for them
    ("ByteLevel(regex)",): "gpt-2",
    ("Digits(individual)", "ByteLevel(regex)"): "smollm",
    (f"Split({LLAMA3_SPLIT})", "ByteLevel"): "llama-bpe",
    (f"Split({QWEN2_SPLIT})", "ByteLevel"): "qwen2",
}


def add_tokenizer(writer, folder: Path, vocab_size: int) -> str:
    """Write the tokens, their types, the merges, special token ids and chat template of
    ``folder``'s ``tokenizer.json``; return the pre-tokenizer's name."""
    from gguf import SpecialVocab

    spec = tokenizer_json(folder)
    pre = pre_tokenizer_name(spec)
    tokens, types = token_table(spec, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
    return pre


@cache
def _byte_alphabet() -> frozenset[str]:
    """The 256 characters byte-level BPE spells bytes with (GPT-2's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    shifted = [256 + i for i, b in enumerate(b for b in range(256) if b not in printable)]
    return frozenset(chr(c) for c in [*printable, *shifted])


def tokenizer_json(folder: Path) -> dict:
    """The folder's ``tokenizer.json``, refused unless it is a byte-level BPE."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise BadInputError(
            f"{folder} has no tokenizer.json; GGUF export writes the tokenizer into the file: "
            "save the model's fast tokenizer in the folder"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    vocab = spec["model"].get("vocab") or {}
    added = {t["content"] for t in spec.get("added_tokens", [])}
    alphabet = _byte_alphabet()
    if spec["model"]["type"] != "BPE" or any(
        not set(t) <= alphabet for t in vocab if t not in added
    ):
        raise BadInputError(
            f"{path} is not a byte-level BPE tokenizer (GGUF export writes those: SmolLM2, "
            "Llama 3, Qwen2); sentencepiece vocabularies are not supported yet"
        )
    return spec


def _step(p: dict) -> str:
    kind = p["type"]
    if kind == "ByteLevel":
        return "ByteLevel(regex)" if p.get("use_regex", True) else "ByteLevel"
    if kind == "Digits":
        return "Digits(individual)" if p.get("individual_digits") else "Digits"
    if kind == "Split":
        return f"Split({p['pattern'].get('Regex', p['pattern'].get('String'))})"
    return kind


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of ``spec`` (a parsed ``tokenizer.json``)."""
    pre = spec.get("pre_tokenizer") or {"type": "none"}
    steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    name = PRE_TOKENIZERS.get(tuple(_step(p) for p in steps))
    if name is None:
        raise BadInputError(
            f"the tokenizer's pre-tokenizer ({', '.join(_step(p)[:40] for p in steps)}) is not "
            f"one GGUF export names for llama.cpp (supported: {', '.join(PRE_TOKENIZERS.values())})"
        )
    return name


def token_table(spec: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp token type, ``vocab_size`` long: the BPE vocabulary,
    added tokens (special: CONTROL, else USER_DEFINED) and ``[PADn]`` (UNUSED) up to the
    embedding's rows."""
    from gguf import TokenType

    tokens: dict[int, str] = {i: t for t, i in spec["model"]["vocab"].items()}
    types = dict.fromkeys(tokens, int(TokenType.NORMAL))
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = int(TokenType.CONTROL if added["special"] else TokenType.USER_DEFINED)
    if max(tokens) >= vocab_size:
        raise BadInputError(
            f"the tokenizer has token id {max(tokens)}, past the model's {vocab_size} embeddings"
        )
    table = [tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    kinds = [types.get(i, int(TokenType.UNUSED)) for i in range(vocab_size)]
    return table, kinds
