"""Writing files and folders so that no reader ever sees half of one, and finding the installed
packages that carry offline data.

Every write goes to a temporary sibling and is renamed into place (``os.replace`` is atomic on
one file system); a failure removes the temporary and leaves the old target untouched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compress.core.errors import BadInputError


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; it becomes ``path`` when the block ends
    without an exception, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; it replaces ``target`` (see :func:`publish`)
    when the block ends without an exception, and is removed when it raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (indented, ``str()`` for anything JSON has no type for), written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder (or a file in its place) before any work."""
    if target.is_file():
        raise BadInputError(f"output {target} is a file; choose a folder path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise BadInputError(
            f"output folder {target} exists and is not empty; pass --overwrite or choose another --output"
        )


def staging_folder(target: Path) -> Path:
    """The folder a finished output is written into before :func:`publish`: ``.NAME.partial``."""
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


def package_dir(package: str, pip_name: str, needed_for: str) -> Path:
    """The folder of an installed package that ships data, found without importing it.

    Raises:
        BadInputError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError(
            f"{needed_for} needs the package {pip_name}: "
            f"pip install --no-deps {pip_name} (make setup does this)"
        )
    return Path(spec.submodule_search_locations[0])
