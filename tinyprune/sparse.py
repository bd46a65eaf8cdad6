"""A pointwise convolution that skips zero weights: is unstructured sparsity worth anything?

Written as :mod:`tinyprune.kernels` writes its kernels (read its docstring):
a plain Python function with its shapes in the docstring, compiled with
Numba on the line after it, both tested to agree.  ``tinyprune bench``
times it against the dense matrix product at 0 to 99% zeros.
"""

import numba
import numpy as np
from numba import prange

__all__ = ["to_csr", "csr_pointwise"]


# ---------------------------------------------------------------------------
# Unstructured sparsity: a pointwise convolution that skips zero weights.
#
# A 1x1 convolution is y[n] = W @ x[n] with W (C_out, C_in).  After
# unstructured pruning most entries of W are zero, and a zero weight adds
# nothing, so a kernel could skip it.  CSR ("compressed sparse row") stores
# only the non-zeros, row by row:
#   values[k]   the k-th non-zero weight, rows in order
#   indices[k]  its column (the input channel it reads)
#   indptr[o]   where row o starts in values; row o is values[indptr[o]:indptr[o+1]]
# The kernel then does one multiply-add pass over an input row per non-zero
# weight and none for the zeros.  Whether that beats a dense BLAS product,
# which multiplies the zeros too but is far better tuned, is measured by
# `tinyprune bench` (its unstructured-sparsity figures).
# ---------------------------------------------------------------------------

def to_csr(w):
    """The CSR form ``(indptr, indices, values)`` of a 2-D weight ``w`` (C_out, C_in).

    indptr (C_out + 1,) int64, indices (nnz,) int64, values (nnz,) of w's dtype.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"to_csr: expected a 2-D weight (C_out, C_in), got shape {w.shape}")
    rows, cols = np.nonzero(w)                   # row-major order, so rows come sorted
    indptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64), np.ascontiguousarray(w[rows, cols])


def _csr_pointwise(indptr, indices, values, x, out):
    """Pointwise convolution with a CSR weight: out[n] = W @ x[n], zeros skipped.

    indptr, indices, values   the CSR form of W (C_out, C_in), see to_csr
    x   (N, C_in, P)          P = H*W pixels
    out (N, C_out, P)         overwritten
    """
    N, P = x.shape[0], x.shape[2]
    C_out = indptr.shape[0] - 1
    for no in prange(N * C_out):
        n = no // C_out
        o = no % C_out
        y = out[n, o]
        for p in range(P):
            y[p] = 0.0
        for k in range(indptr[o], indptr[o + 1]):
            w_k = values[k]
            x_c = x[n, indices[k]]               # the input channel this weight reads
            for p in range(P):
                y[p] += w_k * x_c[p]


csr_pointwise = numba.njit(cache=True, nogil=True, parallel=True)(_csr_pointwise)
