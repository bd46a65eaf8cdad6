"""A kernel written twice, as in tinyprune: a plain function, then the line that compiles it."""

import numba


def _row_sums(x, out):
    """out[i] = sum over j of x[i, j].  x (R, C), out (R,), both float64."""
    for i in range(x.shape[0]):
        ### BEGIN SOLUTION kernels.1
        total = 0.0
        for j in range(x.shape[1]):
            total += x[i, j]
        out[i] = total
        ### END SOLUTION


row_sums = numba.njit(cache=False)(_row_sums)
