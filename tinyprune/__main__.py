"""``python -m tinyprune`` runs the ``tinyprune`` command (see :mod:`tinyprune.tools.cli`)."""

import sys

from .tools.cli import main

sys.exit(main())
