"""The token cache: a hit equals tokenizing, any change of text or tokenizer misses, a bad or
unwritable cache only costs time."""

import copy

import pytest

from compress.data.calibration import load_texts, tokenize_stream
from compress.data.token_cache import cache_key, cached_tokens


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_TOKEN_CACHE", "1")
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    return tmp_path / "tokens"


class Counting:
    """``tokenizer``'s encoding, counting the calls."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_hit_equals_tokenizing_and_skips_it(cache, tokenizer):
    texts = load_texts("wikipedia", "validation")[:20]
    fresh = tokenize_stream(tokenizer, texts)
    assert len(list(cache.glob("*.npy"))) == 1
    encode = Counting(tokenizer)
    hit = cached_tokens(tokenizer, "\n\n".join(texts), encode)
    assert encode.calls == 0
    assert hit.dtype == fresh.dtype and hit.equal(fresh)
    expected = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    assert hit.tolist() == expected


def test_another_text_or_tokenizer_is_another_entry(tokenizer):
    key = cache_key(tokenizer, "some text")
    assert key != cache_key(tokenizer, "some text.")
    changed = copy.deepcopy(tokenizer)
    changed.add_tokens(["<brand-new-token>"])
    assert key != cache_key(changed, "some text")
    assert key == cache_key(copy.deepcopy(tokenizer), "some text")


def test_a_damaged_entry_is_tokenized_again(cache, tokenizer):
    text = "A damaged cache entry is rebuilt."
    first = cached_tokens(tokenizer, text, Counting(tokenizer))
    (entry,) = cache.glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:20])  # truncated
    encode = Counting(tokenizer)
    assert cached_tokens(tokenizer, text, encode).equal(first) and encode.calls == 1
    assert cached_tokens(tokenizer, text, Counting(tokenizer)).equal(first)  # rewritten whole


def test_an_unwritable_cache_still_tokenizes(tmp_path, monkeypatch, tokenizer):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("COMPRESS_TOKEN_CACHE", "1")
    monkeypatch.setenv("COMPRESS_CACHE", str(blocked))
    encode = Counting(tokenizer)
    assert cached_tokens(tokenizer, "no disk to keep it on", encode).tolist() == encode(
        "no disk to keep it on"
    )
    assert encode.calls == 2  # once inside, once above: nothing was kept


def test_switched_off_writes_nothing(cache, monkeypatch, tokenizer):
    monkeypatch.setenv("COMPRESS_TOKEN_CACHE", "0")
    tokenize_stream(tokenizer, ["nothing kept"])
    assert not cache.exists()
