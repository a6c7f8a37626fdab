"""``python -m compress.cli``: the same as the ``compress`` console script."""

from compress.cli.main import app

app()
