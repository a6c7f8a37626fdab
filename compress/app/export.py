"""Export workflows: ONNX (``export onnx``, ``run-onnx``), bitsandbytes (``export bnb``), the
model card (``card``) and the Hub upload (``push``).

Each command's options are the fields of its config here (``export onnx`` embeds
:class:`exporters.onnx.OnnxExportConfig`); the CLI builds the command and prints the result.
Heavy libraries are imported inside the workflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import MISSING, dataclass, field
from pathlib import Path

from compress.core.config import check_window_count
from compress.core.options import option
from compress.core.shared_options import device_option, output_option, overwrite_option
from exporters.bnb import BnbScheme
from exporters.onnx import OnnxExportConfig

FOLDER_HELP = "Model folder written by compress prune (or any saved model)."


@dataclass(frozen=True)
class ExportOnnxConfig:
    """``compress export onnx``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    output: Path | None = output_option(
        None, "Export folder (default: DIR/onnx)", short=True, lock=True
    )
    onnx: OnnxExportConfig = field(default_factory=OnnxExportConfig)
    overwrite: bool = overwrite_option("an existing export folder")

    @property
    def target(self) -> Path:
        return self.output or self.folder / "onnx"


def export_onnx(config: ExportOnnxConfig) -> dict:
    """Export to ONNX and check it in ONNX Runtime; returns export_report.json."""
    from compress.core.claim import output_lock
    from exporters.onnx import export_onnx as run_export

    # an --output given is claimed by the command; the default one is claimed here
    with nullcontext() if config.output else output_lock(config.target):
        return run_export(config.folder, config.target, config.onnx, overwrite=config.overwrite)


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
class ExportBnbConfig:
    """``compress export bnb``."""

    folder: Path = option(argument=True, help=FOLDER_HELP)
    output: Path = output_option(MISSING, "Folder for the quantized model", short=True, lock=True)
    quantize: BnbScheme = option(
        BnbScheme.nf4,
        help="bitsandbytes scheme: bnb-nf4 (4-bit NormalFloat) or bnb-int8 (LLM.int8).",
    )
    device: str = device_option()
    eval_dataset: str = option("wikipedia", help="Held-out text for the perplexity before/after.")
    eval_seqlen: int = option(512, help="Tokens per perplexity window.")
    eval_windows: int = option(40, help="Perplexity windows (0: all).")
    overwrite: bool = overwrite_option("an existing output folder")

    def __post_init__(self) -> None:
        check_window_count("--eval-windows", self.eval_windows)


def export_bnb(config: ExportBnbConfig) -> dict:
    """Quantize a pruned folder with bitsandbytes; returns its report's artifacts record."""
    from exporters.bnb import quantize_folder

    return quantize_folder(
        config.folder,
        config.output,
        config.quantize.value,
        config.device,
        config.eval_dataset,
        config.eval_seqlen,
        config.eval_windows or None,
        config.overwrite,
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
