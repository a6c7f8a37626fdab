"""Typer plumbing shared by every command group: one-line errors and a fast ``--help``."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from compress.core.errors import CompressError


class ErrorReportingGroup(TyperGroup):
    """Turns a :class:`CompressError` anywhere below into one stderr line and exit code 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
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
