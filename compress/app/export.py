"""Workflows around the exports: running an ONNX export (``run-onnx``), the model card
(``card``) and the Hub upload (``push``). The ``export NAME`` commands come from the exporters'
registry (:mod:`exporters.registry`), each config beside its exporter.

Each command's options are the fields of its config here; the CLI builds the command and prints
the result. Heavy libraries are imported inside the workflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compress.core.options import option
from exporters.base import FOLDER_HELP


@dataclass(frozen=True)
class RunOnnxConfig:
    """``compress run-onnx``."""

    folder: Path = option(argument=True, help="Folder written by compress export onnx.")
    prompt: str = option(argument=True, help="Text to continue.")
    max_new_tokens: int = option(50, help="Tokens to generate.")
    int8: bool = option(False, help="Use model_int8.onnx (from --quantize).")
    int4: bool = option(False, help="Use model_int4.onnx (--quantize int4).")


def run_onnx(config: RunOnnxConfig) -> Iterator[str]:
    """The greedy continuation of the prompt by the exported model, piece by piece:
    onnxruntime-genai's generator streams a folder built with ``--runtime genai``."""
    from exporters.onnx import generate_text
    from exporters.onnx.genai import is_genai_folder, stream_text

    if is_genai_folder(config.folder):
        yield from stream_text(config.folder, config.prompt, config.max_new_tokens)
        return
    yield generate_text(
        config.folder, config.prompt, config.max_new_tokens, int8=config.int8, int4=config.int4
    )


@dataclass(frozen=True)
class CardConfig:
    """``compress card``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    check: bool = option(
        False,
        flags="--check",
        help="Check offline that README.md reads as the records render it; write nothing.",
    )
    repo_id: str | None = option(None, help="Hub repo the card will live in (for the snippets).")


def card(config: CardConfig) -> Path:
    """Write (or, ``check``, only validate) the folder's model card; returns README.md's path.

    Raises:
        BadInputError: the card's metadata is invalid, or a line of the card differs from
            what the records render (edited by hand, or stale).
    """
    from cards.builder import README, require_valid, write_card

    path = config.folder / README
    if not config.check:
        path = write_card(config.folder, config.repo_id)
    require_valid(config.folder)
    return path


@dataclass(frozen=True)
class PushConfig:
    """``compress push``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    repo_id: str = option(help="Hub repo id, NAME or USER/NAME.")
    private: bool = option(False, help="Create the repo private.")
    revision: str | None = option(None, help="Branch to commit to (default: main).")
    commit_message: str | None = option(None, help="Commit message.")


def push(config: PushConfig) -> str:
    """Upload the folder to the Hub in one commit; returns the commit URL."""
    from exporters.hub import push_folder

    return push_folder(
        config.folder, config.repo_id, config.private, config.revision, config.commit_message
    )
