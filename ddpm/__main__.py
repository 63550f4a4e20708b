"""``python -m ddpm``: see :mod:`ddpm.cli`."""

import sys

from .cli import main

sys.exit(main())
