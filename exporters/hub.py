"""Push a compressed model folder to the Hugging Face Hub in one commit.

The folder (model, tokenizer, README.md card, recipe.json, report.json, and an ``onnx/`` export
when there is one) goes up with ``HfApi.create_repo(exist_ok=True)`` then ``upload_folder``,
which makes a single commit. The token comes from where ``huggingface_hub`` looks (``HF_TOKEN``,
then the login cache); it is handed to ``HfApi`` and never printed, logged or written.
``HF_ENDPOINT`` redirects the client (tests point it at a local server).

Failures (offline, refused token, server error, dropped connection) raise :class:`HubPushError`
with one line that ends in the exact command to retry; nothing in the local folder changes.

A large folder (a 7B model in bfloat16 is ~13 GB in a few shards) resumes by running that same
command again, which sends only what the Hub does not hold yet. The Hub's content-addressed
storage is the record of what arrived; nothing is kept on this machine between runs:

- Git LFS (no ``hf_xet``, or ``HF_HUB_DISABLE_XET``): ``upload_folder`` hashes each file and asks
  the LFS batch API what to send; the Hub gives no upload action for an object it already
  stores, so the shards that arrived before the cut are skipped and only the shard cut part way
  goes again, whole (multipart parts of an unfinished upload are not kept either).
- Xet (the default wherever ``hf_xet`` is installed, both supported stacks): chunks the Hub
  already has are deduplicated, and huggingface_hub >= 1 also drops files already committed.

Why not ``HfApi.upload_large_folder``: huggingface_hub 2.x (the transformers 5 stack) has no such
method, its resumable path being ``upload_folder`` itself; and on 0.x its workers catch every
error and retry forever (a Hub that stays down hangs the command instead of ending in the retry
line), it writes its resume state into the uploaded folder (``.cache/huggingface/upload/``), and
it commits in several commits with a fixed message (no ``--commit-message``). What it saves on a
resume is re-hashing the folder, a sequential read of it.

Memory stays flat in the folder's size: files are hashed in 1 MiB reads and uploads stream from
the open file (one slice per multipart part); ``benchmarks/push_scale.py`` measures peak RSS.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from compress.core.errors import BadInputError, CompressError

# Hidden files and folders (editor swaps, caches, staging folders) never leave the machine.
IGNORE_PATTERNS = [".*", "**/.*", ".*/*", "**/.*/*", "__pycache__/*", "**/__pycache__/*"]
ONNX_SUBFOLDER = "onnx"


class HubPushError(CompressError):
    """A push to the Hub failed; the message says why and how to retry."""


def retry_command(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """The ``compress push`` command line that repeats this push (shell-quoted)."""
    argv = ["compress", "push", str(folder), "--repo-id", repo_id]
    if private:
        argv.append("--private")
    if revision:
        argv += ["--revision", revision]
    if commit_message:
        argv += ["--commit-message", commit_message]
    return shlex.join(argv)


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` to the model repo ``repo_id`` in one commit; return the commit URL.

    Args:
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main when missing; None = main.

    Raises:
        BadInputError: not a model folder, no model card (README.md), a malformed repo id, or
            an ONNX export that failed its parity check.
        HubPushError: no token, refused token, Hub unreachable or failing mid-upload.
    """
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    _check_folder(folder)
    _check_repo_id(repo_id)
    retry = retry_command(folder, repo_id, private, revision, commit_message)
    token = get_token()
    if not token:
        raise HubPushError(
            "no Hugging Face token: set HF_TOKEN or run `huggingface-cli login`, then retry: "
            + retry
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with compress",
            ignore_patterns=IGNORE_PATTERNS,
        )
    except Exception as exc:  # noqa: BLE001  (narrowed by _as_push_error, re-raised otherwise)
        error = _as_push_error(exc, api.endpoint, retry)
        if error is None:
            raise
        raise error from None  # the chained traceback would add nothing the line does not say
    return commit.commit_url


def _as_push_error(exc: Exception, endpoint: str, retry: str) -> HubPushError | None:
    """One line for the failures a user can fix by retrying; None for anything else (a bug).

    ``huggingface_hub`` wraps LFS upload failures in a ``RuntimeError``, so the cause chain is
    searched for the network or HTTP error underneath.
    """
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from compress.model.compat import is_hub_network_error

    while isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set; unset it"
    elif isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            why = f"{endpoint} refused the token (HTTP {status}); check HF_TOKEN or log in again"
        else:
            detail = " ".join((exc.server_message or "").split())[:200]
            why = f"{endpoint} answered HTTP {status}" + (f" ({detail})" if detail else "")
    elif is_hub_network_error(exc):
        why = f"could not reach {endpoint} or the connection dropped ({type(exc).__name__})"
    else:
        return None
    return HubPushError(f"push failed: {why}; nothing local changed. Retry: {retry}")


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise BadInputError(f"{folder} has no config.json: point to a saved model folder")
    if not (folder / "README.md").is_file():
        raise BadInputError(
            f"{folder} has no README.md: run compress card {folder}, review it, push"
        )
    export_report = folder / ONNX_SUBFOLDER / "export_report.json"
    if export_report.is_file() and not json.loads(export_report.read_text())["parity"]["passed"]:
        raise BadInputError(
            f"{export_report} records a failed parity check: re-export or delete {export_report.parent}"
        )


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise BadInputError(
            f"--repo-id {repo_id!r} is not a valid repo id: use NAME or USER/NAME"
        ) from exc
