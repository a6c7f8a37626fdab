"""Output folders that never hold half-written results.

A run writes into a staging folder beside the target (``.NAME.partial``) and renames it into
place only when everything is written; an existing non-empty target is refused unless the user
asked to overwrite it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.errors import BadInputError


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder (or a file in its place) before any work."""
    if target.is_file():
        raise BadInputError(f"output {target} is a file; choose a folder path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise BadInputError(
            f"output folder {target} exists and is not empty; pass --overwrite or choose another --output"
        )


def staging_folder(target: Path) -> Path:
    """The folder the finished output is written into before :func:`publish`."""
    return target.parent / f".{target.name}.partial"


def work_folder(target: Path) -> Path:
    """Per-block checkpoints of an unfinished run (removed once the output is published)."""
    return target.parent / f".{target.name}.work"


def publish(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing an old target only once the new one is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        retired = target.parent / f".{target.name}.old"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
