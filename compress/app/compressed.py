"""``compress export compressed``: a dense pruned folder rewritten in the compressed-tensors
format (:mod:`exporters.compressed`), its card re-rendered with the new deployment record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.core.options import option
from compress.core.shared_options import overwrite_option


@dataclass(kw_only=True)
class CompressedExportConfig:
    folder: str = option(argument=True, help="Dense model folder written by compress prune.")
    output: str = option(
        flags=("--output", "-o"),
        help="Folder for the compressed-tensors checkpoint (written atomically).",
        lock=True,
    )
    overwrite: bool = overwrite_option()


def run_export_compressed(config: CompressedExportConfig) -> dict:
    """Write ``config.output`` from ``config.folder``; return its deployment record."""
    from cards.builder import write_card
    from exporters.compressed import write_compressed

    record = write_compressed(Path(config.folder), Path(config.output), config.overwrite)
    write_card(Path(config.output))
    return record
