"""Typer plumbing shared by every command group: one-line errors and a fast ``--help``."""

from __future__ import annotations

import copy
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from compress.core.errors import CompressError, Interrupted, Terminated, signal_exit_code


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM to this process raises :class:`Terminated`, so it unwinds like
    SIGINT; the previous handler is restored after. A child forked inside the block (a
    multiprocessing pool's worker) is ended by SIGTERM as usual: a pool terminates its workers
    that way and waits for them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handle(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ErrorReportingGroup(TyperGroup):
    """Turns a :class:`CompressError` anywhere below into one stderr line and exit code 2, and
    SIGINT or SIGTERM into one line and the shell's code for the signal (130, 143): SIGTERM
    unwinds like SIGINT, so every clean-up on the way out runs."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with sigterm_unwinds():
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


class StackedHelpCommand(TyperCommand):
    """A command whose ``--help`` lists an option's other names (a switch's off form, an alias)
    under its first one instead of in columns of their own, so the help text keeps most of an
    80-column terminal. A switch that is off by default shows no default; one that is on shows
    its flag. Parsing is untouched: only the help sees the restacked names."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        params = self.params
        self.params = [_stacked(param) for param in params]
        try:
            super().format_help(ctx, formatter)
        finally:
            self.params = params


def _stacked(param: Any) -> Any:
    if not isinstance(param, TyperOption) or len(param.opts) + len(param.secondary_opts) < 2:
        return param
    shown = copy.copy(param)
    shown.opts = ["\n".join([*param.opts, *param.secondary_opts])]
    shown.secondary_opts = []
    if param.is_bool_flag and param.secondary_opts:
        shown.show_default = param.opts[0] if param.default else False
    return shown


def new_app(help_text: str) -> typer.Typer:
    """A typer app (or sub-app) with the project's settings; locals never appear in tracebacks."""
    return typer.Typer(
        cls=ErrorReportingGroup,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
    )
