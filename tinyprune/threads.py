"""Threads: how many NumPy's BLAS may use, and how Numba's wait between kernels.

``import tinyprune`` calls :func:`configure_threads` once; both of its
settings are explained here, and both leave alone what you chose yourself.

BLAS
----

NumPy hands matrix products to its BLAS library (OpenBLAS in the wheels
from PyPI).  MobileNet's products are small and come one per image (a
pointwise conv at batch 64 is 64 products of, say, 16 x 8 by 8 x 2304), so
splitting each over several threads costs more in hand-overs than it
gains, and OpenBLAS's idle threads spin for the cores that tinyprune's own
Numba threads are using (the README's speed section has the
measurements).  That is why the convolutions' products are tinyprune's
own Numba kernels, shared out image by image (tinyprune/products.py, and
the fused eval path); the dense layers' still go to BLAS.

So ``import tinyprune`` asks OpenBLAS for one thread, unless you have
chosen yourself by setting ``OPENBLAS_NUM_THREADS``.  NumPy reads that
variable only when it is first imported, usually before tinyprune is, so
the request is made through OpenBLAS's own function
``openblas_set_num_threads``, found in the library NumPy loaded.  That
changes BLAS for the whole process: call ``set_blas_threads(n)`` to give
other work more threads back.  With another BLAS (MKL, Apple's
Accelerate) nothing is found and nothing changes.
"""

import ctypes
import functools
import glob
import os

import numpy as np

__all__ = ["blas_threads", "set_blas_threads", "configure_threads"]

# The names OpenBLAS exports, with and without the prefix and suffix that
# NumPy's own build (scipy-openblas, 64-bit integers) adds.
_SET = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")


@functools.cache                         # NumPy loads one BLAS per process: look for it once
def _openblas():
    """The OpenBLAS that NumPy loaded, as a ctypes library, or None."""
    numpy_dir = os.path.dirname(np.__file__)
    # Where pip wheels keep their bundled libraries: numpy.libs beside the
    # package (Linux, Windows), numpy/.dylibs inside it (macOS).
    patterns = [os.path.join(numpy_dir + ".libs", "*openblas*"),
                os.path.join(numpy_dir, ".dylibs", "*openblas*")]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            library = ctypes.CDLL(path)      # already loaded by NumPy: this is the same copy
        except OSError:
            continue
        if any(hasattr(library, name) for name in _SET):
            return library
    return None


def _function(names):
    library = _openblas()
    if library is None:
        return None
    for name in names:
        if hasattr(library, name):
            return getattr(library, name)
    return None


def blas_threads():
    """The number of threads OpenBLAS uses now, or None if NumPy's BLAS is not OpenBLAS."""
    get = _function(_GET)
    if get is None:
        return None
    get.restype = ctypes.c_int
    return int(get())


def set_blas_threads(n):
    """Let OpenBLAS use ``n`` threads from now on; returns False if there is no OpenBLAS to ask."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_blas_threads: expected a positive number of threads, got {n!r}")
    set_ = _function(_SET)
    if set_ is None:
        return False
    set_(ctypes.c_int(n))
    return True


# OpenMP.  Numba runs the prange loops of tinyprune.kernels on a team of OpenMP threads
# (unless the TBB library is installed).  Between two parallel loops, a
# thread that has finished its share waits for the next one, and how it
# waits matters:
#
# * spinning (busy-waiting, OpenMP's default for a while after each loop)
#   answers the next loop at once, but when other programs share the cores,
#   the spinning eats the very time slices that the thread still computing
#   needs, and a training step slows down several times over;
# * sleeping (OMP_WAIT_POLICY=PASSIVE) costs a wake-up of tens of
#   microseconds per loop, which adds up in a forward pass of some sixty
#   loops, most of all for a single image.
#
# So tinyprune asks for both: spin briefly (GOMP_SPINCOUNT, GNU OpenMP's
# spin budget, about a microsecond per thousand), enough to catch the next
# kernel of the same forward pass, then sleep.  Other OpenMP runtimes
# ignore GOMP_SPINCOUNT and simply sleep.  OpenMP reads the
# variables when Numba first starts its threads, at the first kernel call,
# so setting them at import is in time; values you set yourself are left
# alone.
def _calm_openmp():
    """Ask OpenMP threads to spin briefly, then sleep, unless the user set either variable."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ["GOMP_SPINCOUNT"] = "1000"


def configure_threads():
    """What ``import tinyprune`` does: one BLAS thread and brief OpenMP spinning.

    Each setting is skipped when you chose it yourself (``OPENBLAS_NUM_THREADS``;
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``).
    """
    _calm_openmp()
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        set_blas_threads(1)
