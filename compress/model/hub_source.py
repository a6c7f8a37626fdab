"""A Hub id as a local folder: one quick look at the repository first, so that an unreachable
Hub, a gated or missing repository, or Meta's original checkpoint format is known in seconds,
before any long download, and said in one line.

The look is a single ``model_info`` call with a short timeout (``COMPRESS_HUB_TIMEOUT``, 3 s):
no retries, so no storm of retry warnings. Unreachable -> the cached snapshot, if any.
``HF_HUB_OFFLINE=1`` -> the cache only, without a look.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compress.core.errors import BadInputError
from compress.model.convert_meta import PARAMS, is_meta_format, meta_files

NOT_WEIGHTS = (".bin", ".pth", ".pt", ".h5", ".msgpack", ".gguf", ".onnx", ".onnx_data", ".ckpt")
TOKEN_HELP = "set HF_TOKEN=<your token> or run `hf auth login`"


def hub_timeout() -> float:
    return float(os.environ.get("COMPRESS_HUB_TIMEOUT", "3"))


@dataclass(frozen=True)
class Remote:
    """What one look at a repository told."""

    repo_id: str
    revision: str  # the commit seen (names the converted folder)

    sizes: dict[str, int]  # path -> bytes

    @property
    def meta(self) -> bool:
        return is_meta_format(self.top_level) and "config.json" not in self.top_level

    @property
    def top_level(self) -> list[str]:
        return [name for name in self.sizes if "/" not in name]

    def wanted(self) -> list[str]:
        """The files loading needs: Meta's, or the top-level transformers files with safetensors
        weights (an ``original/`` subfolder of Meta's files is left on the Hub)."""
        if self.meta:
            return meta_files(self.top_level)
        files = [n for n in self.top_level if not n.endswith(NOT_WEIGHTS)]
        if not any(n.endswith(".safetensors") for n in files):
            raise BadInputError(
                f"{self.repo_id} has no safetensors weights (compress never loads pickled "
                ".bin/.pth weights of a transformers model: they can run code)"
            )
        return files


def hub_page(repo_id: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def look(repo_id: str) -> Remote | None:
    """One ``model_info`` call; None when the Hub cannot be reached.

    Raises:
        BadInputError: the repository is gated, private or missing.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from compress.model.compat import hub_network_errors

    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=hub_timeout())
    except hub_network_errors():
        return None
    except HfHubHTTPError as exc:
        raise access_error(repo_id, exc) from None
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    return Remote(repo_id, info.sha or "main", sizes)


def access_error(repo_id: str, exc: Exception) -> BadInputError:
    """One line for a refused request; the token itself is never part of it."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or (
        status in (401, 403) and not isinstance(exc, RepositoryNotFoundError)
    ):
        return BadInputError(
            f"{repo_id} is gated: accept its licence at {hub_page(repo_id)} while logged in, "
            f"then give a token with access: {TOKEN_HELP}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return BadInputError(
            f"model {repo_id!r} was not found on the Hub (if it is private: {TOKEN_HELP}); "
            "check the id, or pass a local folder"
        )
    return BadInputError(f"the Hub refused {repo_id} (HTTP {status}); try again later")


def check_access(remote: Remote, first: str) -> None:
    """A gated repository shows its file list to anyone; its files need the licence accepted.
    One HEAD on a small file says which, before anything large moves."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(remote.repo_id, first, revision=remote.revision)
    try:
        get_hf_file_metadata(url, timeout=hub_timeout())
    except HfHubHTTPError as exc:
        raise access_error(remote.repo_id, exc) from None


def twin(remote: Remote, log: Callable[[str], None]) -> Remote:
    """For Meta's format, its transformers twin ``<id>-hf`` when the Hub has one."""
    if not remote.meta:
        return remote
    try:
        other = look(f"{remote.repo_id}-hf")
    except BadInputError:
        other = None
    if other is None or other.meta or "config.json" not in other.top_level:
        return remote
    log(
        f"{remote.repo_id} holds Meta's original format; using its transformers twin {other.repo_id}"
    )
    return other


def cached(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def unreachable(repo_id: str) -> BadInputError:
    from huggingface_hub import constants

    if offline():
        why = "HF_HUB_OFFLINE=1 is set"
    else:
        why = f"the Hub ({constants.ENDPOINT}) cannot be reached"
    return BadInputError(
        f"model {repo_id!r} could not be found: {why} and it is not in the local cache; "
        "connect, or pass a local folder"
    )


def resolve_remote(repo_id: str, log: Callable[[str], None]) -> Remote | Path:
    """What to download (a :class:`Remote`, read from the default branch so that the cache
    knows it by name offline), or the cached folder when offline or unreachable.

    Raises:
        BadInputError: unreachable and not cached, gated, private, missing, no safetensors.
    """
    if offline():
        folder = cached(repo_id) or cached(f"{repo_id}-hf")
        if folder is None:
            raise unreachable(repo_id)
        return folder
    remote = look(repo_id)
    if remote is None:
        folder = cached(repo_id)
        if folder is None:
            raise unreachable(repo_id)
        log(f"the Hub cannot be reached; using the cached {repo_id}")
        return folder
    remote = twin(remote, log)
    wanted = remote.wanted()
    check_access(remote, PARAMS if remote.meta else "config.json")
    return Remote(remote.repo_id, remote.revision, {n: remote.sizes[n] for n in wanted})


def download(remote: Remote, name: str) -> Path:
    """``name`` (a small file, for planning) or, with ``name=""``, every wanted file."""
    from huggingface_hub import hf_hub_download, snapshot_download

    if name:
        return Path(hf_hub_download(remote.repo_id, name))
    return Path(snapshot_download(remote.repo_id, allow_patterns=list(remote.sizes)))
