"""Two exercises fenced in place, and a function that runs a kernel."""

import numpy as np

from . import kernels


def softsign(x):
    """softsign(x) = x / (1 + |x|), elementwise: a smooth step from -1 to 1. Same shape as ``x``."""
    ### BEGIN SOLUTION
    return x / (1.0 + np.abs(x))
    ### END SOLUTION


class Doubler:
    """y = 2 x: a layer with no parameters."""

    def forward(self, x):
        return 2.0 * x

    def backward(self, dy):
        """dL/dx from dL/dy (same shape): by the chain rule, dy times dy/dx."""
        ### BEGIN SOLUTION
        grad = dy + dy
        return grad
        ### END SOLUTION


def row_sums(x):
    """The sum of each row of a 2-D array ``x`` (R, C) -> (R,), by the compiled kernel."""
    out = np.empty(x.shape[0], dtype=np.float64)
    kernels.row_sums(np.ascontiguousarray(x, dtype=np.float64), out)
    return out
