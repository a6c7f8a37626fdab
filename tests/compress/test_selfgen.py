"""Self-generated calibration text: the recipe, the language filter, resume, inspect, windows."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from compress.core.errors import BadInputError
from compress.data.selfgen import (
    Recipe,
    decoding,
    detect_language,
    first_token_choices,
    generate_file,
    generate_ids,
    generate_long_texts,
    inspect,
    length_histogram,
    looks_like_code,
    read_samples,
    selfgen_windows,
    split_seed,
    text_seed,
)
from compress.data.selfgen.decoding import SlotLayer


def accept_all(text: str) -> tuple[str, float]:
    return "en", 1.0


def write_lines(path, samples: list[dict]) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


def test_first_tokens_exclude_special_tokens(tiny_llama, tokenizer):
    choices = first_token_choices(tiny_llama, tokenizer)
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    assert special == set(range(17))  # SmolLM2: <|endoftext|> ... <empty_output>
    assert len(choices) == 49152 - 17
    assert not special & set(choices.tolist())


def test_recipe_random_first_token_then_four_greedy(tiny_llama, tokenizer):
    seeds = [text_seed(0, d) for d in range(3)]
    texts = generate_ids(tiny_llama, tokenizer, seeds, Recipe(max_len=12))
    choices = first_token_choices(tiny_llama, tokenizer)
    for seed, ids in zip(seeds, texts):
        g = torch.Generator().manual_seed(seed)
        assert ids[0] == int(choices[torch.randint(len(choices), (1,), generator=g)])
        greedy = tiny_llama.generate(
            torch.tensor([ids[:1]]), do_sample=False, max_new_tokens=4, min_new_tokens=4
        )
        assert ids[1:5] == greedy[0, 1:].tolist()
        assert len(ids) == 12  # no EOS from this random model: the length limit ends it


def test_top_k_one_turns_sampling_greedy(tiny_llama, tokenizer):
    ids = generate_ids(tiny_llama, tokenizer, [7], Recipe(max_len=10, top_k=1))[0]
    greedy = tiny_llama.generate(torch.tensor([ids[:1]]), do_sample=False, max_new_tokens=9)
    assert ids == greedy[0].tolist()


def test_sampling_is_seeded_per_text_not_per_batch(tiny_llama, tokenizer):
    recipe = Recipe(max_len=16)
    together = generate_ids(tiny_llama, tokenizer, [11, 12, 13], recipe)
    alone = generate_ids(tiny_llama, tokenizer, [12], recipe)
    assert together[1] == alone[0]
    assert together[0][5:] != together[2][5:]  # sampled tails differ between seeds


def greedy_alone(model, first: int, max_len: int) -> list[int]:
    """The greedy text from ``first`` computed alone by transformers' own generate."""
    steps = max_len - 1
    prompt = torch.tensor([[first]])
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=steps,
        min_new_tokens=steps, pad_token_id=0,
    )  # fmt: skip
    return out[0].tolist()


def ending_at(ids: list[int], stop: int) -> list[int]:
    return ids[: next((i for i, t in enumerate(ids) if i > 0 and t == stop), len(ids))]


def staggered(model, tokenizer, seeds: list[int], max_len: int) -> tuple[int, list[list[int]]]:
    """A stop id that ends the last seed's greedy text after 3 tokens, and every seed's greedy
    text cut there: rows of one batch then end at different steps, the last draw first."""
    choices = first_token_choices(model, tokenizer)
    firsts = [
        int(choices[torch.randint(len(choices), (1,), generator=torch.Generator().manual_seed(s))])
        for s in seeds
    ]
    full = [greedy_alone(model, first, max_len) for first in firsts]
    stop = full[-1][3]
    return stop, [ending_at(ids, stop) for ids in full]


def test_rows_that_end_give_their_place_to_the_next_text(tiny_llama, tokenizer, monkeypatch):
    seeds = [text_seed(0, d) for d in range(7)]
    stop, expected = staggered(tiny_llama, tokenizer, seeds, 24)
    monkeypatch.setattr(tiny_llama.generation_config, "eos_token_id", stop)
    assert len({len(ids) for ids in expected}) > 1  # rows do end at different steps
    rows_per_pass = []
    forward = tiny_llama.forward

    def counting(*args, **kwargs):
        rows_per_pass.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_llama, "forward", counting)
    texts = generate_ids(tiny_llama, tokenizer, seeds, Recipe(max_len=24, top_k=1), batch_size=3)
    assert texts == expected  # cache, mask and positions right for rows that start late
    # every token fed once; the last token of a text cut by the length limit is never fed
    assert sum(rows_per_pass) == sum(len(ids) - (len(ids) == 24) for ids in texts)
    assert max(rows_per_pass) == 3 and rows_per_pass[-1] < 3  # the tail shrinks


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_long_run_moves_its_cache_blocks_to_the_front(
    tiny_llama, tokenizer, monkeypatch, attention
):
    """sdpa models decode with blockwise attention (8-column blocks here: the buffer holds 80
    columns), any other with one column a block (76): ~150 steps move the cache either way."""
    seeds = [text_seed(0, d) for d in range(30)]
    stop, expected = staggered(tiny_llama, tokenizer, seeds, 12)
    monkeypatch.setattr(tiny_llama.generation_config, "eos_token_id", stop)
    monkeypatch.setattr(tiny_llama.config, "_attn_implementation", attention)
    monkeypatch.setattr(decoding, "BLOCK", 8)
    moves, widths = [], []
    monkeypatch.setattr(
        SlotLayer,
        "move_to_front",
        lambda self, blocks, f=SlotLayer.move_to_front: moves.append(blocks) or f(self, blocks),
    )
    monkeypatch.setattr(
        SlotLayer,
        "lazy_initialization",
        lambda self, keys, values=None, f=SlotLayer.lazy_initialization: (
            f(self, keys),
            widths.append(self.keys.shape[0] * self.keys.shape[3]),
        ),
    )
    texts = generate_ids(tiny_llama, tokenizer, seeds, Recipe(max_len=12, top_k=1), batch_size=2)
    assert moves and all(blocks > 0 for blocks in moves) and texts == expected
    assert set(widths) == {80 if attention == "sdpa" else 76}


@torch.no_grad()
def test_blocked_attention_equals_sdpa_on_the_same_cache():
    """One query token per row against a cache in 4-column blocks, unused columns masked: the
    blockwise attention equals SDPA on the same keys, values and mask laid out as a sequence."""
    g = torch.Generator().manual_seed(0)
    rows, kv_heads, groups, dim, blocks, block = 3, 2, 3, 8, 5, 4
    keys = torch.randn(blocks, rows, kv_heads, block, dim, generator=g)
    values = torch.randn(blocks, rows, kv_heads, block, dim, generator=g)
    query = torch.randn(rows, kv_heads * groups, 1, dim, generator=g)
    starts = torch.tensor([0, 7, 13])
    read = torch.arange(blocks * block)
    hidden = (read[None] < starts[:, None]) | (read[None] > 17)
    mask = torch.zeros(hidden.shape).masked_fill_(hidden, torch.finfo(torch.float32).min)
    mask = mask[:, None, None, :]
    out, _ = decoding._blocked_attention(None, query, keys, values, mask, scaling=0.3)
    as_sequence = keys.permute(1, 2, 0, 3, 4).reshape(rows, kv_heads, blocks * block, dim)
    values_sequence = values.permute(1, 2, 0, 3, 4).reshape(rows, kv_heads, blocks * block, dim)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, as_sequence.repeat_interleave(groups, 1),
        values_sequence.repeat_interleave(groups, 1), attn_mask=mask, scale=0.3,
    )  # fmt: skip
    assert out.shape == (rows, 1, kv_heads * groups, dim)
    torch.testing.assert_close(out, expected.transpose(1, 2))


def test_texts_reach_the_file_in_draw_order(tiny_llama, tokenizer, tmp_path, monkeypatch):
    seeds = [text_seed(0, d) for d in range(4)]
    stop, expected = staggered(tiny_llama, tokenizer, seeds, 16)
    monkeypatch.setattr(tiny_llama.generation_config, "eos_token_id", stop)
    recipe, run = Recipe(max_len=16, top_k=1), dict(detect=accept_all, progress=False)
    path = tmp_path / "calib.jsonl"
    stats = generate_file(tiny_llama, tokenizer, path, 4, recipe, batch_size=4, **run)
    samples = read_samples(path)
    assert len(expected[-1]) < len(expected[0])  # the last draw ends first
    assert [s["seed"] for s in samples] == seeds
    assert [s["tokens"] for s in samples] == [len(ids) for ids in expected]
    assert stats.tokens == sum(len(ids) for ids in expected)
    resumed = tmp_path / "resumed.jsonl"
    generate_file(tiny_llama, tokenizer, resumed, 2, recipe, batch_size=4, **run)
    generate_file(tiny_llama, tokenizer, resumed, 4, recipe, batch_size=4, **run)
    assert resumed.read_text() == path.read_text()


def test_language_identifier():
    assert detect_language("The committee approved the budget for the new library.")[0] == "en"
    lang, score = detect_language(
        "Der Ausschuss hat den Haushalt für die neue Bibliothek gebilligt."
    )
    assert lang == "de" and 0.5 < score <= 1.0


def test_non_english_texts_are_rejected_and_redrawn(tiny_llama, tokenizer, tmp_path):
    calls = []

    def every_other(text: str) -> tuple[str, float]:
        calls.append(text)
        return ("de", 0.9) if len(calls) % 2 else ("en", 0.8)

    path = tmp_path / "calib.jsonl"
    stats = generate_file(
        tiny_llama, tokenizer, path, 3, Recipe(max_len=8), batch_size=2, detect=every_other,
        progress=False,
    )  # fmt: skip
    samples = read_samples(path)
    assert (stats.texts, stats.added, stats.rejected, stats.draws) == (3, 3, 3, 6)
    assert stats.rejection_rate == 0.5
    assert stats.describe()["texts_per_second"] == stats.texts_per_second > 0
    assert [split_seed(s["seed"])[1] for s in samples] == [1, 3, 5]  # draws 0, 2, 4 rejected
    assert all(s["lang"] == "en" and s["lang_score"] == 0.8 for s in samples)


def test_gives_up_when_nothing_is_english(tiny_llama, tokenizer, tmp_path):
    with pytest.raises(BadInputError, match="4 of 4 drawn texts were not 'en'"):
        generate_file(
            tiny_llama, tokenizer, tmp_path / "c.jsonl", 2, Recipe(max_len=8), batch_size=2,
            detect=lambda text: ("fr", 0.9), max_draws=4, progress=False,
        )  # fmt: skip


def test_resume_continues_to_exactly_n(tiny_llama, tokenizer, tmp_path):
    recipe, run = Recipe(max_len=8), dict(detect=accept_all, progress=False, batch_size=2)
    once = tmp_path / "once.jsonl"
    generate_file(tiny_llama, tokenizer, once, 5, recipe, **run)
    path = tmp_path / "calib.jsonl"
    generate_file(tiny_llama, tokenizer, path, 3, recipe, **run)
    assert len(read_samples(path)) == 3
    with path.open("a") as handle:  # a write cut short
        handle.write('{"text": "half a li')
    stats = generate_file(tiny_llama, tokenizer, path, 5, recipe, **run)
    assert (stats.added, stats.texts) == (2, 5)
    assert path.read_text() == once.read_text()  # draws 3, 4 continue where the run stopped
    again = generate_file(tiny_llama, tokenizer, path, 5, recipe, **run)
    assert (again.added, again.draws, len(read_samples(path))) == (0, 0, 5)


def test_reproducible_with_a_seed(tiny_llama, tokenizer, tmp_path):
    run = dict(detect=accept_all, progress=False, batch_size=2)
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(paths, (4, 4, 5)):
        generate_file(tiny_llama, tokenizer, path, 2, Recipe(max_len=10), seed=seed, **run)
    assert paths[0].read_text() == paths[1].read_text()
    assert paths[0].read_text() != paths[2].read_text()
    line = read_samples(paths[0])[1]
    assert split_seed(line["seed"]) == (4, 1) and line["tokens"] == 10
    redrawn = generate_ids(tiny_llama, tokenizer, [line["seed"]], Recipe(max_len=10))[0]
    assert tokenizer.decode(redrawn) == line["text"]


def test_resume_with_another_seed_is_refused(tiny_llama, tokenizer, tmp_path):
    path = tmp_path / "calib.jsonl"
    write_lines(path, [{"text": "a", "seed": text_seed(1, 0)}])
    with pytest.raises(BadInputError, match="generated with --seed 1"):
        generate_file(tiny_llama, tokenizer, path, 2, Recipe(max_len=8), seed=0, progress=False)


def test_a_foreign_line_is_an_error(tmp_path):
    path = tmp_path / "calib.jsonl"
    path.write_text('{"text": "a", "seed": 0}\n[1, 2]\n')
    with pytest.raises(BadInputError, match="calib.jsonl:2 is not a self-generated sample"):
        read_samples(path)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("The river flows north through the valley, past two old mills.", False),
        ("def area(r):\n    return 3.14 * r * r\n\nprint(area(2))", True),
        ("x = {a: [1, 2]}; y = x[a] * 2; z = (y / 3) & 1;", True),
        ("<div class='note'>\n  <p>Hello</p>\n</div>", True),
        ("", False),
    ],
)
def test_looks_like_code(text, code):
    assert looks_like_code(text) is code


def test_length_histogram_buckets():
    assert length_histogram([5, 63, 64, 200, 300]) == [
        ("1-63", 2),
        ("64-127", 1),
        ("128-255", 1),
        ("256-511", 1),
    ]


def test_inspect_counts_languages_openings_and_code(tmp_path):
    path = tmp_path / "calib.jsonl"
    write_lines(
        path,
        [
            {"text": "The cat sat.", "seed": 0, "tokens": 4, "lang": "en", "lang_score": 0.9},
            {"text": "The dog ran far.", "seed": 1, "tokens": 70, "lang": "en", "lang_score": 0.9},
            {"text": "import os\nimport sys", "seed": 2, "tokens": 5, "lang": "en"},
            {"text": "Der Hund lief.", "seed": 3, "tokens": 6, "lang": "de", "lang_score": 0.7},
        ],
    )
    info = inspect(path, top=2)
    assert info["texts"] == 4
    assert info["tokens"] == {"total": 85, "mean": 21.25, "min": 4, "max": 70}
    assert info["length_histogram"] == [("1-63", 3), ("64-127", 1)]
    assert info["languages"] == {"en": 0.75, "de": 0.25}
    assert info["opening_tokens"] == [("The", 2), ("import", 1)]
    assert info["code_share"] == 0.25
    assert info["seeds"] == [0]


def test_selfgen_windows_take_random_windows_of_long_texts(tokenizer, tmp_path):
    words = [" ".join(f"w{i}{j}" for j in range(n)) for i, n in enumerate((60, 3, 80, 5, 70))]
    path = tmp_path / "calib.jsonl"
    write_lines(path, [{"text": t, "seed": i} for i, t in enumerate(words)])
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in words]
    windows = selfgen_windows(tokenizer, path, 2, 16, seed=3)
    assert windows.ids.shape == (2, 16)
    assert windows.available_tokens == sum(len(x) for x in ids if len(x) >= 16)
    for row in windows.ids.tolist():  # each window is a contiguous piece of one long text
        assert any(row == x[s : s + 16] for x in ids if len(x) >= 16 for s in range(len(x) - 15))
    assert torch.equal(windows.ids, selfgen_windows(tokenizer, path, 2, 16, seed=3).ids)
    assert selfgen_windows(tokenizer, path, None, 16, seed=0).ids.shape == (3, 16)
    assert windows.describe("self-generated")["kind"] == "self-generated"
    with pytest.raises(BadInputError, match="3 of 5 texts have at least 16 tokens, 4 windows"):
        selfgen_windows(tokenizer, path, 4, 16, seed=0)


def test_generate_long_texts_until_enough_windows(tiny_llama, tokenizer, tmp_path):
    path, recipe = tmp_path / "calib.jsonl", Recipe(max_len=10)
    run = dict(detect=accept_all, progress=False, batch_size=2)
    stats = generate_long_texts(tiny_llama, tokenizer, path, 3, 8, recipe, **run)
    assert stats.texts == len(read_samples(path)) >= 3 and stats.added == stats.texts
    assert selfgen_windows(tokenizer, path, 3, 8, seed=0).ids.shape == (3, 8)
    again = generate_long_texts(tiny_llama, tokenizer, path, 3, 8, recipe, **run)
    assert again.draws == 0
    with pytest.raises(BadInputError, match="--max-len 10 must be at least --seqlen 16"):
        generate_long_texts(tiny_llama, tokenizer, path, 3, 16, recipe, **run)


def test_cli_generate_then_inspect(tiny_model_dir, tmp_path):
    from compress.cli.main import app

    out = tmp_path / "calib.jsonl"
    args = ["calib", "generate", str(tiny_model_dir), "--n", "2", "--max-len", "8"]
    args += ["--batch-size", "2", "--lang", "any", "--device", "cpu", "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 texts (2 new; 2 drawn, 0 rejected = 0.0%)" in result.output
    assert "accepted texts/s" in result.output and "tokens/s generated" in result.output
    assert [s["tokens"] for s in read_samples(out)] == [8, 8]
    result = CliRunner().invoke(app, ["calib", "inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 texts, 16 tokens" in result.output and "opening word" in result.output


def test_cli_bad_inputs_exit_2(tmp_path):
    from compress.cli.main import app

    result = CliRunner().invoke(app, ["calib", "inspect", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(app, ["calib", "generate", "--lang", "xx"])
    assert result.exit_code == 2 and "--lang 'xx'" in result.output
    result = CliRunner().invoke(app, ["calib", "generate", "--max-len", "3"])
    assert result.exit_code == 2 and "--max-len 3" in result.output


@pytest.mark.parametrize("command", [[], ["generate"], ["inspect"]])
def test_help(command):
    out = subprocess.run(
        [sys.executable, "-m", "compress.cli", "calib", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Usage" in out.stdout


def test_self_generation_ignores_the_checkpoints_generation_config(tiny_llama, tokenizer):
    """A checkpoint's sampling settings (generation_config.json) never reach the recipe: the
    decoding loop is our own, so transformers' generate never merges them in."""
    recipe, seeds = Recipe(max_len=12), [3, 4]
    plain = generate_ids(tiny_llama, tokenizer, seeds, recipe)
    model = copy.deepcopy(tiny_llama)
    saved = model.generation_config
    saved.repetition_penalty, saved.no_repeat_ngram_size, saved.min_new_tokens = 5.0, 1, 11
    assert generate_ids(model, tokenizer, seeds, recipe) == plain
