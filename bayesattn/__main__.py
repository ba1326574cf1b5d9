"""``python -m bayesattn``: the same as the ``bayesattn`` command."""

import sys

from .cli import main

sys.exit(main())
