"""Typer plumbing shared by every command group: one-line errors and a fast ``--help``."""

from __future__ import annotations

import signal
import threading
from typing import Any

import typer
from typer.core import TyperGroup

from compress.core.errors import CompressError, Interrupted, Terminated, signal_exit_code


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class ErrorReportingGroup(TyperGroup):
    """Turns a :class:`CompressError` anywhere below into one stderr line and exit code 2, and
    SIGINT or SIGTERM into one line and the shell's code for the signal (130, 143): SIGTERM
    unwinds like SIGINT, so every clean-up on the way out runs."""

    def invoke(self, ctx: typer.Context) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(signal_exit_code(exc)) from None
        except Interrupted as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except CompressError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


def new_app(help_text: str) -> typer.Typer:
    """A typer app (or sub-app) with the project's settings; locals never appear in tracebacks."""
    return typer.Typer(
        cls=ErrorReportingGroup,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
    )
