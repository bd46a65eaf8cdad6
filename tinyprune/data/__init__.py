"""Images and labels for the pruning tutorial, from disk to batches."""

from .synthetic import *  # noqa: F401,F403
from .synthetic import __all__  # noqa: F401
