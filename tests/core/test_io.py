"""core/io.py: what a published file looks like and how a failed write is reported."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from compress.core.errors import OutputError
from compress.core.io import atomic_file, atomic_folder, reported_writes, write_errno


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_an_atomic_folder_is_published_with_the_users_umask(tmp_path, umask_022):
    """Main: mkdtemp's 0700 folder (an ONNX export) and a writer's 0600 file stayed so."""
    target = tmp_path / "export"
    with atomic_folder(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "model.onnx").write_bytes(b"graph")
        (staging / "private.bin").write_bytes(b"w")
        (staging / "private.bin").chmod(0o600)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [target, *target.rglob("*")]}
    assert modes == {"export": 0o755, "sub": 0o755, "model.onnx": 0o644, "private.bin": 0o644}


def test_an_atomic_file_gets_the_users_umask(tmp_path, umask_022):
    """Main: mkstemp's 0600."""
    path = tmp_path / "result.json"
    with atomic_file(path) as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EROFS, "Read-only file system"), errno.EROFS),
        # what safetensors' Rust writer raises on a full disk
        (RuntimeError("Error while serializing: IoError(No space left (os error 28))"), 28),
        (FileNotFoundError(errno.ENOENT, "No such file"), None),  # a missing input, not a write
        (ValueError("bad value"), None),
    ],
)
def test_write_errno_tells_a_failed_write(exc, code):
    assert write_errno(exc) == code


def test_reported_writes_names_the_target_and_passes_other_errors(tmp_path):
    with pytest.raises(OutputError, match=r"writing .*out failed: .*No space left on device; act"):
        with reported_writes(tmp_path / "out", "act"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x"))
    with pytest.raises(KeyError):
        with reported_writes(tmp_path / "out"):
            raise KeyError("not a write")
