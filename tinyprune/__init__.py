"""tinyprune: prune, propagate, resize and count a MobileNet, in NumPy and Numba.

The package follows the pipeline of the course tutorial, one module a step:
layers -> model -> prune -> propagate -> resize -> count -> train -> plots.
"""

import os

from .blas import blas_threads, set_blas_threads  # noqa: F401
from .activations import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .prune import *  # noqa: F401,F403
from .propagate import *  # noqa: F401,F403
from .resize import *  # noqa: F401,F403
from .count import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
from .checkpoint import *  # noqa: F401,F403
from .testing import *  # noqa: F401,F403
# tinyprune.plots is imported on demand: it loads matplotlib.

# One BLAS thread unless you chose otherwise: see tinyprune/blas.py.
if "OPENBLAS_NUM_THREADS" not in os.environ:
    set_blas_threads(1)

__version__ = "0.1.0"
