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
from .criteria import *  # noqa: F401,F403
from .gradual import *  # noqa: F401,F403
from .checkpoint import *  # noqa: F401,F403
from .gradcheck import *  # noqa: F401,F403
from .fold import fold_batchnorm  # noqa: F401
from .onnx_export import export_onnx  # noqa: F401  (imports onnx only when called)
from . import pipeline  # noqa: F401  (the tutorial's stages, written once: tinyprune.pipeline)
# tinyprune.plots is imported on demand: it loads matplotlib.

__version__ = "0.1.0"


def __getattr__(name):
    # save_grid draws with matplotlib, which `import tinyprune` does not load: fetch it on first use.
    if name == "save_grid":
        from .plots import save_grid
        return save_grid
    raise AttributeError(f"module 'tinyprune' has no attribute {name!r}")
