"""``python -m tinyprune`` runs the ``tinyprune`` command (see :mod:`tinyprune.cli`)."""

import sys

from .cli import main

sys.exit(main())
