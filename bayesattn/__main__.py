"""``python -m bayesattn``: the same as the ``bayesattn`` command."""

from .cli import console

console()
