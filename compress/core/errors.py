"""The project's error hierarchy.

The CLI catches :class:`CompressError`, prints its message as one line on stderr and exits
with code 2. Any other exception is a bug and keeps its traceback.
"""


class CompressError(Exception):
    """Base of every error the user can act on."""


class BadInputError(CompressError):
    """A value given by the user is wrong; the message names it and the fix."""


class NumericsError(CompressError):
    """A computation failed numerically (e.g. Cholesky on a singular Hessian)."""


class ExportParityError(CompressError):
    """An exported model disagrees with the PyTorch model beyond tolerance."""


class OutputError(CompressError):
    """An output cannot be written: a read-only or full disk, a file in a folder's place."""


class Interrupted(CompressError):
    """SIGINT or SIGTERM stopped a run; the message says what was kept. Exits with the shell's
    code for the signal (130 or 143), not 2."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises ``KeyboardInterrupt`` (the CLI installs the handler),
    so both unwind through the same clean-up."""


def signal_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended."""
    return 143 if isinstance(exc, Terminated) else 130
