"""tinyprune: prune, propagate, resize and count a MobileNet, in NumPy and Numba.

The package follows the pipeline of the course tutorial, one module a step:
layers -> model -> prune -> propagate -> resize -> count -> optim -> train -> plots.
"""

from .threads import blas_threads, configure_threads, set_blas_threads  # noqa: F401

configure_threads()   # before any kernel runs: see tinyprune/threads.py

from .activations import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .prune import *  # noqa: F401,F403
from .propagate import *  # noqa: F401,F403
from .resize import *  # noqa: F401,F403
from .count import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .optim import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
from .checkpoint import *  # noqa: F401,F403
from .gradcheck import *  # noqa: F401,F403
# tinyprune.plots is imported on demand: it loads matplotlib.

__version__ = "0.1.0"
