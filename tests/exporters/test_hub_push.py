"""Hub push against a local fake Hub (``fake_hub.py``): round trip, failures, token hygiene."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub, HubStore, point_clients_at, reset_sessions
from typer.testing import CliRunner

from cards.builder import write_card
from compress.cli.main import app
from compress.core.errors import BadInputError
from exporters.hub import IGNORE_PATTERNS, HubPushError, push_folder, retry_command

TOKEN = "hf_fakeTestToken0123456789abcdefABCDEF"
REPO = "user/tiny-pruned"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def uploadable(folder: Path) -> dict[str, bytes]:
    return {
        path: (folder / path).read_bytes()
        for path in snapshot(folder)
        if not any(part.startswith(".") for part in Path(path).parts)
    }


def token_free(paths: list[Path]) -> None:
    for root in paths:
        for p in root.rglob("*"):
            if p.is_file():
                assert TOKEN.encode() not in p.read_bytes(), f"token written to {p}"


@pytest.fixture
def model_dir(pruned_llama_dir, tmp_path) -> Path:
    """A pushable folder: pruned model, tokenizer, report, card and an ``onnx/`` subfolder."""
    folder = tmp_path / "model"
    shutil.copytree(pruned_llama_dir, folder)
    write_card(folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(os.urandom(2048))
    (folder / "onnx" / "export_report.json").write_text('{"parity": {"passed": true}}\n')
    (folder / ".partial").write_text("resume state, never uploaded\n")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "upload.lock").write_text("never uploaded\n")
    return folder


@pytest.fixture
def sharded_dir(model_dir) -> Path:
    """``model_dir`` with its weights in three shards of unequal size plus the index, as
    ``save_pretrained`` shards a large model, and the card rendered again for them (the stand-in
    ONNX export report goes: a card cannot render from it)."""
    from safetensors.torch import load_file, save_file

    (model_dir / "onnx" / "export_report.json").unlink()
    state = load_file(model_dir / "model.safetensors")
    names = sorted(state, key=lambda name: state[name].numel())
    groups = [names[: len(names) // 4], names[len(names) // 4 : len(names) // 2]]
    groups.append(names[len(names) // 2 :])  # the largest tensors: the largest shard
    weight_map = {}
    for i, group in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({name: state[name] for name in group}, model_dir / shard, {"format": "pt"})
        weight_map.update(dict.fromkeys(group, shard))
    (model_dir / "model.safetensors").unlink()
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    write_card(model_dir)
    return model_dir


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub on 127.0.0.1 and huggingface_hub/transformers pointed at it in-process."""
    from huggingface_hub import constants

    server = FakeHub(HubStore(token=TOKEN, blob_dir=tmp_path / "hub-blobs")).start()
    point_clients_at(monkeypatch, server.url)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.stop()
    reset_sessions()


def test_cli_push_round_trip_is_bit_identical(model_dir, hub, tmp_path, caplog):
    """`compress push` in a subprocess configured only through HF_ENDPOINT/HF_TOKEN, then
    from_pretrained through the same endpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = snapshot(model_dir)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    code = "from compress.cli.main import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", code, "push", str(model_dir), "--repo-id", REPO],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"pushed {model_dir} to {REPO}" in result.stdout
    assert TOKEN not in result.stdout + result.stderr

    expected = uploadable(model_dir)
    assert not any(path.startswith(".") for path in expected) and "onnx/model.onnx" in expected
    assert hub.store.files(REPO) == expected  # every file, byte for byte, in one commit
    commits = [r for r in hub.store.requests if r[1].startswith(f"/api/models/{REPO}/commit/")]
    assert len(commits) == 1
    writes = [r for r in hub.store.requests if r[0] == "POST"]
    assert all(r[2].get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert snapshot(model_dir) == before

    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "download-cache"
    loaded = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=cache)
    AutoTokenizer.from_pretrained(REPO, cache_dir=cache)
    local = AutoModelForCausalLM.from_pretrained(model_dir)
    remote_state, local_state = loaded.state_dict(), local.state_dict()
    assert remote_state.keys() == local_state.keys()
    assert all(torch.equal(remote_state[k], local_state[k]) for k in local_state)
    assert TOKEN not in caplog.text
    token_free([model_dir, cache, tmp_path / "hf-home"])


def test_server_killed_mid_upload_fails_cleanly_then_retry_succeeds(
    model_dir, hub, monkeypatch, caplog
):
    from huggingface_hub.utils import _http

    caplog.set_level(logging.DEBUG)
    # huggingface_hub retries a dropped upload 5 times with 1-8 s waits; skip the waiting.
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    before = snapshot(model_dir)
    hub.store.kill_during_upload = True
    runner = CliRunner()
    result = runner.invoke(app, ["push", str(model_dir), "--repo-id", REPO])
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]  # after the upload progress bars
    assert error.startswith("error: push failed") and result.stderr.count("error:") == 1
    assert "connection dropped" in error and "nothing local changed" in error
    assert TOKEN not in result.output
    assert hub.store.files(REPO) == {}  # no partial commit
    assert snapshot(model_dir) == before

    retry = error.split("Retry: ", 1)[1]
    assert retry == retry_command(model_dir, REPO)
    back = FakeHub(hub.store, port=hub.port).start()  # the Hub returns on the same address
    reset_sessions()
    try:
        result = runner.invoke(app, shlex.split(retry)[1:])
    finally:
        back.stop()
    assert result.exit_code == 0, result.output
    assert hub.store.files(REPO) == uploadable(model_dir)
    assert snapshot(model_dir) == before
    assert TOKEN not in caplog.text + result.output


@pytest.mark.parametrize("part_size", [None, 1 << 20], ids=["basic", "multipart"])
def test_push_killed_mid_upload_resends_only_what_the_hub_lacks(
    sharded_dir, hub, monkeypatch, part_size
):
    """The server dies while the largest shard is half sent, after the other files in flight
    arrived; the same push, run again, sends only the objects the Hub does not hold."""
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    hub.store.part_size = part_size
    shards = {sha256_of(p): p for p in sharded_dir.glob("*.safetensors")}
    assert len(shards) == 3
    largest = max(shards, key=lambda oid: shards[oid].stat().st_size)
    hub.store.kill_during_upload = largest
    before = snapshot(sharded_dir)
    with pytest.raises(HubPushError, match="connection dropped"):
        push_folder(sharded_dir, REPO)
    kept = set(hub.store.stored)
    assert kept and largest not in kept
    assert hub.store.files(REPO) == {}  # nothing committed

    first_run = len(hub.store.requests)
    back = FakeHub(hub.store, port=hub.port).start()
    reset_sessions()
    try:
        push_folder(sharded_dir, REPO)
    finally:
        back.stop()
    rerun = hub.store.requests[first_run:]
    resent = {path.split("/")[2] for method, path, _ in rerun if method == "PUT"}
    assert largest in resent and not resent & kept  # only what the Hub lacked went up again
    assert set(hub.store.stored) == kept | resent and set(shards) <= kept | resent
    assert hub.store.files(REPO) == uploadable(sharded_dir)  # bit-identical, one commit
    assert len([r for r in rerun if r[1].startswith(f"/api/models/{REPO}/commit/")]) == 1
    assert snapshot(sharded_dir) == before
    result = CliRunner().invoke(app, ["card", str(sharded_dir), "--check"])
    assert result.exit_code == 0, result.output


def test_wrong_token_is_refused_without_echoing_it(model_dir, hub, monkeypatch):
    wrong = "hf_wrongToken9876543210"
    monkeypatch.setenv("HF_TOKEN", wrong)
    result = CliRunner().invoke(app, ["push", str(model_dir), "--repo-id", REPO])
    assert result.exit_code == 2
    assert "refused the token (HTTP 401)" in result.stderr
    assert f"Retry: compress push {model_dir} --repo-id {REPO}" in result.stderr
    assert wrong not in result.output and TOKEN not in result.output


def test_no_token_names_where_to_put_one(model_dir, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    result = CliRunner().invoke(app, ["push", str(model_dir), "--repo-id", REPO, "--private"])
    assert result.exit_code == 2
    assert "no Hugging Face token" in result.stderr and "HF_TOKEN" in result.stderr
    assert result.stderr.strip().endswith(f"--repo-id {REPO} --private")
    assert hub.store.requests == []


def test_offline_mode_is_one_line(model_dir, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reset_sessions()
    result = CliRunner().invoke(app, ["push", str(model_dir), "--repo-id", REPO])
    assert result.exit_code == 2 and "HF_HUB_OFFLINE is set" in result.stderr
    assert hub.store.requests == []


def test_revision_branch_and_private_repo(model_dir, hub):
    url = push_folder(model_dir, REPO, private=True, revision="pruned-v1", commit_message="v1")
    assert "/commit/" in url
    assert hub.store.repos[REPO].private
    assert hub.store.files(REPO, "pruned-v1") == uploadable(model_dir)
    assert hub.store.files(REPO, "main") == {}


def test_folder_checks(model_dir, tmp_path):
    with pytest.raises(BadInputError, match="no config.json"):
        push_folder(tmp_path, REPO)
    with pytest.raises(BadInputError, match="--repo-id"):
        push_folder(model_dir, "bad repo id!")
    (model_dir / "onnx" / "export_report.json").write_text('{"parity": {"passed": false}}')
    with pytest.raises(BadInputError, match="failed parity check"):
        push_folder(model_dir, REPO)
    (model_dir / "README.md").unlink()
    with pytest.raises(BadInputError, match="compress card"):
        push_folder(model_dir, REPO)


def test_retry_command_quotes_what_the_shell_needs():
    command = retry_command(Path("out/my model"), "me/x", True, "dev", "first cut")
    assert shlex.split(command) == [
        "compress", "push", "out/my model", "--repo-id", "me/x", "--private",
        "--revision", "dev", "--commit-message", "first cut",
    ]  # fmt: skip
    assert ".*" in IGNORE_PATTERNS


@pytest.mark.slow
def test_prune_push_to_hub_uploads_model_and_card(tiny_model_dir, hub, tmp_path):
    out = tmp_path / "pruned"
    args = [
        "prune",
        str(tiny_model_dir),
        "--output",
        str(out),
        "--device",
        "cpu",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--push-to-hub",
        "--hub-repo-id",
        "user/pushed",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    files = hub.store.files("user/pushed")
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert files["README.md"] == (out / "README.md").read_bytes()
    assert "wanda" in files["README.md"].decode() and "report.json" in files
    assert TOKEN not in result.output
