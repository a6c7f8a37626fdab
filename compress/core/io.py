"""Writing files and folders so that no reader ever sees half of one, and finding the installed
packages that carry offline data.

Every write goes to a temporary sibling and is renamed into place (``os.replace`` is atomic on
one file system); a failure removes the temporary and leaves the old target untouched.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compress.core.errors import BadInputError, OutputError

# What a failed write of ours looks like, as opposed to a missing input: no room, no permission,
# a read-only or failing disk, a file in a folder's place.
WRITE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.EIO,
        errno.ENOTDIR,
    }
)


def write_errno(exc: BaseException) -> int | None:
    """The errno of a failed write: an ``OSError``'s own, or the ``(os error N)`` that Rust-backed
    writers (safetensors, tokenizers) put in their message; None for anything else."""
    if isinstance(exc, OSError):
        code = exc.errno
    else:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    return code if code in WRITE_ERRNOS else None


@contextmanager
def reported_writes(
    target: Path, then: str = "free space or choose another output"
) -> Iterator[None]:
    """Turn a failed write inside the block (see :func:`write_errno`) into one :class:`OutputError`
    line naming ``target``, the system's reason and ``then`` (what to do); every other exception
    passes unchanged."""
    try:
        yield
    except Exception as exc:
        code = write_errno(exc)
        if code is None:
            raise
        where = getattr(exc, "filename", None) or target
        raise OutputError(f"writing {target} failed: {where}: {os.strerror(code)}; {then}") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; it becomes ``path`` when the block ends
    without an exception, and is removed when it raises. The file gets the user's umask like any
    other (``mkstemp`` alone would leave it 0600)."""
    path = Path(path)
    with reported_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
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
    with reported_writes(target):
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


def with_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the user's umask gives a new file or
    folder: ``mkdtemp`` makes folders 0700 and some writers make files 0600."""
    mask = _umask()
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def publish(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, replacing an old target only once the new one is complete;
    the published files get the user's umask (:func:`with_umask`)."""
    with_umask(staging)
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
