"""The command line: a typer app; nothing imports this package."""
