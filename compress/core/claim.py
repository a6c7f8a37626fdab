"""Claiming an output before the work that fills it: refuse early what cannot be written, and
keep two runs from writing one target.

A run that writes ``NAME`` holds an exclusive ``flock`` on ``.NAME.lock`` beside it for its whole
life (the kernel drops the lock when the process dies, however it dies), so a second run into the
same target is refused in one line naming the first one's PID instead of sharing its
``.NAME.partial`` and ``.NAME.work`` folders. Before any model is loaded, the nearest existing
folder above the target is probed with a real file: a read-only filesystem, a parent that is a
regular file, or a pseudo-filesystem such as /proc is one line, not a traceback after the work.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compress.core.errors import BadInputError, OutputError


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def _existing_ancestor(path: Path) -> Path:
    """The nearest path at or above ``path``'s parent that exists (a folder, or a file in the way)."""
    for candidate in (path.parent, *path.parent.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor)


def check_writable(target: Path, flag: str = "--output") -> None:
    """Refuse, before any work, a ``target`` that cannot be created: a regular file where a
    folder must be, or a filesystem that is read-only or takes no files (whether the disk has
    room is the preflight's check, :func:`compress.model.plan.check_disk`). Writes nothing.

    Raises:
        OutputError: one line naming the path, what is wrong and what to do.
    """
    target = Path(target).absolute()
    where = _existing_ancestor(target)
    if not where.is_dir():
        raise OutputError(
            f"{flag} {target} cannot be created: {where} is a file, not a folder; "
            f"choose another {flag}"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".compress-probe.", dir=where)
    except OSError as exc:
        raise OutputError(
            f"{flag} {target} cannot be written: {where} takes no new files ({exc.strerror}); "
            f"choose another {flag}"
        ) from exc
    os.close(fd)
    os.unlink(probe)


def _missing_folders(target: Path) -> list[Path]:
    """The folders above ``target`` that do not exist yet, deepest first."""
    return [p for p in (target.parent, *target.parent.parents) if not os.path.lexists(p)]


def _take_lock(lock: Path, target: Path) -> int:
    """An open descriptor holding an exclusive lock on ``lock`` with this PID written in it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BadInputError(
                f"{target} is being written by another compress run (PID {holder}); wait for it "
                "to finish or choose another --output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:  # the holder removed the file as we opened it: try again
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``target`` for the block; folders created to hold the lock are
    removed again when they are left empty, so a refused run leaves the tree as it was.

    Raises:
        BadInputError: another live process holds the lock (the message names its PID).
    """
    target = Path(target).absolute()
    created = _missing_folders(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{target.parent} cannot be created: {exc.strerror}") from exc
    lock = lock_path(target)
    try:
        fd = _take_lock(lock, target)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return
