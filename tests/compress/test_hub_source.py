"""Loading from the Hub as `compress prune meta-llama/Llama-2-7b` does, against the local test
Hub (tests/exporters/fake_hub.py): Meta's format converted or redirected to its `-hf` twin (each
logit-identical to the model it came from), gated repositories, an unreachable Hub, offline mode."""

from __future__ import annotations

import socket
import time

import pytest
import torch
from typer.testing import CliRunner

from compress.cli.main import app
from compress.model.loading import load_model
from tests.exporters.fake_hub import FakeHub, HubStore, point_clients_at
from tests.meta_format import (
    sentencepiece_model,
    tiny_meta_llama,
    vocab_size,
    write_meta_checkpoint,
)

TOKEN = "hf_fakeTestToken0123456789abcdefABCDEF"
META = "meta-llama/Tiny-2-7b"
runner = CliRunner()


@pytest.fixture(scope="module")
def original():
    """The tiny transformers Llama both routes must reproduce, and its tokenizer.model."""
    tokenizer_model = sentencepiece_model()
    return tiny_meta_llama(vocab_size(tokenizer_model)), tokenizer_model


@pytest.fixture(scope="module")
def meta_files(original, tmp_path_factory) -> dict[str, bytes]:
    """Meta's format in two tensor-parallel shards, as a repository's files."""
    folder = write_meta_checkpoint(*original, tmp_path_factory.mktemp("meta"), shards=2)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def hf_files(original, tmp_path_factory) -> dict[str, bytes]:
    """The transformers twin: the same model saved by transformers, tokenizer included."""
    from transformers import LlamaTokenizerFast

    model, tokenizer_model = original
    folder = tmp_path_factory.mktemp("hf")
    (folder / "tokenizer.model").write_bytes(tokenizer_model)
    model.save_pretrained(folder)
    tokenizer = LlamaTokenizerFast.from_pretrained(str(folder), legacy=False, add_bos_token=True)
    tokenizer.save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def caches(monkeypatch, tmp_path):
    """Empty Hub and compress caches for each test."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "compress-cache"))
    return tmp_path


def point_at(monkeypatch, url: str) -> None:
    point_clients_at(monkeypatch, url)


@pytest.fixture
def hub(monkeypatch, caches, tmp_path):
    """The local test Hub, with huggingface_hub pointed at it and no token."""
    from huggingface_hub import constants

    server = FakeHub(HubStore(token=TOKEN, blob_dir=tmp_path / "hub-blobs")).start()
    point_at(monkeypatch, server.url)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(caches / "no-login"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def same_model(loaded, original) -> None:
    model, _ = original
    ids = loaded.tokenizer("the quick brown fox jumps", return_tensors="pt").input_ids
    assert ids[0, 0] == 1 and ids.shape[1] > 3  # bos, then real pieces
    assert torch.equal(logits(loaded.model, ids), logits(model, ids))


def test_meta_folder_is_converted_once_logit_identical(original, meta_files, caches):
    folder = caches / "Tiny-2-7b"
    folder.mkdir()
    for name, content in meta_files.items():
        (folder / name).write_bytes(content)
    notes: list[str] = []
    same_model(load_model(str(folder), dtype="float32", log=notes.append), original)
    assert any("converting Meta's checkpoint format" in n for n in notes)
    notes.clear()
    load_model(str(folder), dtype="float32", log=notes.append)
    assert notes == []  # the converted folder is cached


def test_hub_meta_format_is_downloaded_and_converted(original, meta_files, hub):
    hub.store.add_repo(META, meta_files)
    notes: list[str] = []
    same_model(load_model(META, dtype="float32", log=notes.append), original)
    assert any("converting Meta's checkpoint format" in n for n in notes)
    assert any(n.startswith(f"downloading {META}") for n in notes)


def test_hub_meta_format_uses_its_hf_twin(original, meta_files, hf_files, hub):
    hub.store.add_repo(META, meta_files)
    hub.store.add_repo(f"{META}-hf", hf_files)
    notes: list[str] = []
    same_model(load_model(META, dtype="float32", log=notes.append), original)
    assert f"{META} holds Meta's original format; using its transformers twin {META}-hf" in notes
    fetched = {path for method, path, _ in hub.store.requests if method == "GET"}
    assert not any(path.endswith(".pth") for path in fetched)  # no Meta shard downloaded


def test_original_subfolder_is_left_on_the_hub(original, meta_files, hf_files, hub):
    """Llama 3's layout: transformers files at the top, Meta's under original/."""
    hub.store.add_repo(META, {**hf_files, **{f"original/{k}": v for k, v in meta_files.items()}})
    same_model(load_model(META, dtype="float32"), original)
    fetched = {path for method, path, _ in hub.store.requests if method == "GET"}
    assert not any("/original/" in path for path in fetched)


def prune(*args):
    return runner.invoke(app, ["prune", *map(str, args)])


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0] == f"loading {META}"  # the run's first progress line, then only the error
    lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["401-no-token", "403-not-accepted"])
def test_gated_repository_is_one_line_naming_its_page(meta_files, hub, monkeypatch, token, caches):
    hub.store.add_repo(META, meta_files, gated=True)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result = prune(META, "--output", caches / "out")
    line = one_line_error(result, f"{hub.url}/{META}", "licence", "HF_TOKEN", "hf auth login")
    assert TOKEN not in result.output and "gated" in line
    assert not (caches / "out").exists()
    assert not any(path.endswith(".pth") for _, path, _ in hub.store.requests)


def test_gated_repository_with_licence_accepted_loads(original, meta_files, hub, monkeypatch):
    hub.store.add_repo(META, meta_files, gated=True)
    hub.store.granted.add(META)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    same_model(load_model(META, dtype="float32"), original)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def blackhole():
    """A port that completes the TCP handshake and then never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("kind", ["closed", "blackholed"])
def test_unreachable_hub_fails_fast_in_one_line(kind, caches, monkeypatch, request):
    port = closed_port() if kind == "closed" else request.getfixturevalue("blackhole")
    point_at(monkeypatch, f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    result = prune(META, "--output", caches / "out")
    elapsed = time.perf_counter() - started
    one_line_error(result, "cannot be reached", META, "not in the local cache")
    assert elapsed < 5 * 3  # the issue asks for < 5 s; generous on a loaded 2-core machine


def test_unreachable_hub_uses_the_cache(original, meta_files, hf_files, hub, monkeypatch):
    hub.store.add_repo(f"{META}-hf", hf_files)
    load_model(f"{META}-hf", dtype="float32")
    point_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    notes: list[str] = []
    same_model(load_model(f"{META}-hf", dtype="float32", log=notes.append), original)
    assert notes == [f"the Hub cannot be reached; using the cached {META}-hf"]


def test_offline_mode_reads_only_the_cache(original, hf_files, hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_line_error(prune(META, "--output", tmp_path / "out"), "HF_HUB_OFFLINE=1", META)
    assert hub.store.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.store.add_repo(f"{META}-hf", hf_files)
    load_model(f"{META}-hf", dtype="float32")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.store.requests)
    same_model(load_model(f"{META}-hf", dtype="float32"), original)
    assert len(hub.store.requests) == before


def test_permute_rotary_moves_meta_pairs_to_transformers_halves():
    """Meta rotates channel pairs (2i, 2i+1) of a head; transformers rotates (i, i + d/2): row
    i of a head must come from Meta's row 2i and row i + d/2 from row 2i+1."""
    from compress.model.convert_meta import permute_rotary

    heads, head_dim = 2, 8
    rows = torch.arange(heads * head_dim, dtype=torch.float32).unsqueeze(1)
    order = permute_rotary(rows, heads).squeeze(1).long().tolist()
    assert order[:head_dim] == [0, 2, 4, 6, 1, 3, 5, 7]
    assert order[head_dim:] == [8, 10, 12, 14, 9, 11, 13, 15]


def test_converted_tokenizer_gives_sentencepieces_own_pieces(original, meta_files, caches):
    """BOS, then exactly what SentencePiece (Meta's reference tokenizer) makes of the text.

    Texts within the toy vocabulary: for characters it lacks (no byte fallback in this model)
    transformers 5's converted tokenizer and SentencePiece disagree on the unknown pieces."""
    import sentencepiece

    folder = caches / "Tiny-2-7b"
    folder.mkdir()
    for name, content in meta_files.items():
        (folder / name).write_bytes(content)
    tokenizer = load_model(str(folder), dtype="float32").tokenizer
    reference = sentencepiece.SentencePieceProcessor(model_proto=original[1])
    for text in ("the quick brown fox jumps", "pruning removes every weight of the model"):
        assert tokenizer(text).input_ids == [reference.bos_id(), *reference.encode(text)]
