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
