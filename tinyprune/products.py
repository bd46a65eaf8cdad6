"""The convolutions' matrix products, image by image, on all of Numba's threads.

A full convolution after im2col, and a 1x1 ("pointwise") convolution
without it, is a matrix product per image; its backward pass is two more:

    forward   y[n]    = Wm @ cols[n]                   matmul_images(Wm, cols, y)
    dL/dcols  dc[n]   = Wm.T @ dy[n]                   matmul_images(Wm.T, dy, dc)
    dL/dWm    dWm     = sum over n of dy[n] @ cols[n].T     sum_outer(dy, cols, dWm)

NumPy hands each of them to BLAS, which tinyprune keeps on one thread
(tinyprune/threads.py says why: the hand-overs cost more than they gain,
and idle BLAS threads spin on the cores the Numba kernels need).  So on a
machine with two cores the products ran on one.  These kernels split them
over Numba's threads instead, the images (or the output rows) shared out by
one ``prange``, and block the loops the way BLAS does so that each number
loaded from memory serves several multiply-adds (comments below).

Like tinyprune.kernels: each kernel is a plain function over NumPy arrays,
compiled on the next line; arrays are C-contiguous and written into, never
allocated.  ``contract`` lets the compiler fuse a*b + c into one
multiply-add instruction (one rounding instead of two); the sums may be
reordered (``reassoc``), so results differ from the plain functions by
rounding only.
"""

import numba
import numpy as np
from numba import prange

_parallel = dict(cache=True, nogil=True, parallel=True, fastmath={"contract", "reassoc"})
_serial = dict(cache=True, nogil=True, fastmath={"contract", "reassoc"})


# Unsigned indices.  Python's a[-1] means the last element, so Numba checks
# every index that might be negative and adds the length if it is.  Inside
# an inner loop that check costs more than the work when the loop is short
# (a matrix product with rows of 16 to 128 numbers).  An unsigned number is
# never negative, so Numba leaves the check out: a kernel makes its row and
# column counters unsigned (np.uint64) once, before its inner loop.  Never
# add an unsigned to a signed number in Numba: the sum is a float64.
unsigned = np.uint64


# ---------------------------------------------------------------------------
# out[n] = a @ b[n].  Output rows go 8 at a time and inputs 4 at a time: the
# 32 numbers a[r:r+8, k:k+4] are read once into local variables (registers),
# and then one pass along 4 input rows (the unit-step, vectorised loop over
# pixels) adds all 32 products into the 8 output rows.  Every value loaded
# from b serves 8 outputs; every output is loaded and stored once per 4
# inputs.  A last block of 4 rows goes 4 at a time (a pruned layer's 4, 12
# or 36 outputs); rows and inputs left over after that go one at a time.
# ---------------------------------------------------------------------------

def _eight_rows(a, b, r, p0, p1, y):
    """y[r:r+8, p0:p1] += a[r:r+8, :K4] @ b[:K4, p0:p1], K4 the inputs in whole blocks of 4.

    a (R, K), b (K, P), y (R, P).  The rows and pixels of b and y are
    indexed with unsigned numbers (see ``unsigned``): measured, this made
    the product 1.2x (long rows) to 2x (16 pixels) faster.
    """
    q0, q1, q2, q3 = unsigned(r), unsigned(r + 1), unsigned(r + 2), unsigned(r + 3)
    q4, q5, q6, q7 = unsigned(r + 4), unsigned(r + 5), unsigned(r + 6), unsigned(r + 7)
    for k in range(0, a.shape[1] - 3, 4):
        a00, a01, a02, a03 = a[r, k], a[r, k + 1], a[r, k + 2], a[r, k + 3]
        a10, a11, a12, a13 = a[r + 1, k], a[r + 1, k + 1], a[r + 1, k + 2], a[r + 1, k + 3]
        a20, a21, a22, a23 = a[r + 2, k], a[r + 2, k + 1], a[r + 2, k + 2], a[r + 2, k + 3]
        a30, a31, a32, a33 = a[r + 3, k], a[r + 3, k + 1], a[r + 3, k + 2], a[r + 3, k + 3]
        a40, a41, a42, a43 = a[r + 4, k], a[r + 4, k + 1], a[r + 4, k + 2], a[r + 4, k + 3]
        a50, a51, a52, a53 = a[r + 5, k], a[r + 5, k + 1], a[r + 5, k + 2], a[r + 5, k + 3]
        a60, a61, a62, a63 = a[r + 6, k], a[r + 6, k + 1], a[r + 6, k + 2], a[r + 6, k + 3]
        a70, a71, a72, a73 = a[r + 7, k], a[r + 7, k + 1], a[r + 7, k + 2], a[r + 7, k + 3]
        k0, k1, k2, k3 = unsigned(k), unsigned(k + 1), unsigned(k + 2), unsigned(k + 3)
        for p in range(unsigned(p0), unsigned(p1)):
            v0, v1, v2, v3 = b[k0, p], b[k1, p], b[k2, p], b[k3, p]
            y[q0, p] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
            y[q1, p] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
            y[q2, p] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
            y[q3, p] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3
            y[q4, p] += a40 * v0 + a41 * v1 + a42 * v2 + a43 * v3
            y[q5, p] += a50 * v0 + a51 * v1 + a52 * v2 + a53 * v3
            y[q6, p] += a60 * v0 + a61 * v1 + a62 * v2 + a63 * v3
            y[q7, p] += a70 * v0 + a71 * v1 + a72 * v2 + a73 * v3


def _four_rows(a, b, r, p0, p1, y):
    """y[r:r+4, p0:p1] += a[r:r+4, :K4] @ b[:K4, p0:p1]: a last block of 4 rows.

    ``eight_rows`` for 4 rows, with the same sums in the same order.  A
    layer with 4, 12 or 36 output channels (a pruned one) has such a
    block; row by row (``one_row``), it read every input row 4 times and
    cost as much as two blocks of 8.
    """
    q0, q1, q2, q3 = unsigned(r), unsigned(r + 1), unsigned(r + 2), unsigned(r + 3)
    for k in range(0, a.shape[1] - 3, 4):
        a00, a01, a02, a03 = a[r, k], a[r, k + 1], a[r, k + 2], a[r, k + 3]
        a10, a11, a12, a13 = a[r + 1, k], a[r + 1, k + 1], a[r + 1, k + 2], a[r + 1, k + 3]
        a20, a21, a22, a23 = a[r + 2, k], a[r + 2, k + 1], a[r + 2, k + 2], a[r + 2, k + 3]
        a30, a31, a32, a33 = a[r + 3, k], a[r + 3, k + 1], a[r + 3, k + 2], a[r + 3, k + 3]
        k0, k1, k2, k3 = unsigned(k), unsigned(k + 1), unsigned(k + 2), unsigned(k + 3)
        for p in range(unsigned(p0), unsigned(p1)):
            v0, v1, v2, v3 = b[k0, p], b[k1, p], b[k2, p], b[k3, p]
            y[q0, p] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
            y[q1, p] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
            y[q2, p] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
            y[q3, p] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3


def _one_row(a, b, r, k0, p0, p1, y):
    """y[r, p0:p1] += a[r, k0:] @ b[k0:, p0:p1]: a row left over after the blocks of 8, or the inputs after the blocks of 4.

    Inputs 4 at a time, summed as ``eight_rows`` sums them (a row gets the
    same numbers whether it goes in a block or alone), then the rest one
    at a time.
    """
    out, a_r = y[r, p0:p1], a[r]
    K4 = k0 + (a.shape[1] - k0) // 4 * 4
    for k in range(k0, K4, 4):
        b0, b1, b2, b3 = b[k, p0:p1], b[k + 1, p0:p1], b[k + 2, p0:p1], b[k + 3, p0:p1]
        w0, w1, w2, w3 = a_r[k], a_r[k + 1], a_r[k + 2], a_r[k + 3]
        for p in range(p1 - p0):
            out[p] += w0 * b0[p] + w1 * b1[p] + w2 * b2[p] + w3 * b3[p]
    for k in range(K4, a.shape[1]):
        a_rk, b_k = a_r[k], b[k, p0:p1]
        for p in range(p1 - p0):
            out[p] += a_rk * b_k[p]


eight_rows = numba.njit(**_serial)(_eight_rows)
four_rows = numba.njit(**_serial)(_four_rows)
one_row = numba.njit(**_serial)(_one_row)


def _block_of_rows(a, b, r0, rows, p0, p1, y):
    """y[r0:r0+rows, p0:p1] += a[r0:r0+rows] @ b[:, p0:p1] for a block of at most 8 rows.

    8 rows at once, or 4 and then one at a time, the inputs in blocks of
    4, then those left over one at a time: the order in which every
    product of this module and of the fast path sums a row.
    """
    K4 = a.shape[1] // 4 * 4
    block = 8 if rows == 8 else (4 if rows >= 4 else 0)
    if block == 8:
        eight_rows(a, b, r0, p0, p1, y)
    elif block == 4:
        four_rows(a, b, r0, p0, p1, y)
    for r in range(r0, r0 + block):              # the inputs after the last block of 4
        one_row(a, b, r, K4, p0, p1, y)
    for r in range(r0 + block, r0 + rows):       # rows left over: one at a time
        one_row(a, b, r, 0, p0, p1, y)


# Inlined into its two callers (this module's product and the fast path's):
# compiled on its own it would be one more level that re-optimises the three
# row kernels.
block_of_rows = numba.njit(**_serial, inline="always")(_block_of_rows)


def _matmul_images(a, b, out):
    """out[n] = a @ b[n] for every image n.

    a   (R, K)       the same matrix for every image
    b   (N, K, P)
    out (N, R, P)    overwritten
    """
    N, K, P = b.shape
    R = a.shape[0]
    groups = (R + 7) // 8                        # blocks of 8 rows; the last may have fewer
    # A job is 8 output rows of one image, whole rows: enough jobs for every
    # thread even when N is 1 (a batch folded into one long image).  Rows are
    # not cut into blocks of columns to keep them in the level-1 cache:
    # measured, eight_rows ran 1.3x to 2x slower on a block (p0 ... p1 < P),
    # as the compiler could no longer tell that the rows it writes do not
    # overlap.
    for job in prange(N * groups):
        n = job // groups
        r0 = job % groups * 8
        b_n = b[n]
        y = out[n]
        rows = min(8, R - r0)
        for r in range(r0, r0 + rows):
            y[r] = 0.0
        block_of_rows(a, b_n, r0, rows, 0, P, y)


matmul_images = numba.njit(**_parallel)(_matmul_images)


# ---------------------------------------------------------------------------
# out = sum over n of g[n] @ x[n].T: entry (r, k) is the sum over images and
# pixels of g[n, r, p] * x[n, k, p], a dot product along two rows.  Blocks
# of 4 rows of g and 4 rows of x make 16 dot products in one pass over the
# pixels: each value loaded serves 4 of them.  A thread owns a block of
# output rows, so every output entry has one writer.  Each image's sums are
# taken in the arrays' dtype (vectorised), then added up over the images in
# float64, so float32 sums over a large batch do not drift.
# ---------------------------------------------------------------------------

def _sixteen_sums(g, x, r, k, acc):
    """acc[:, k:k+4] += g[r:r+4] @ x[k:k+4].T;  g (R, P), x (K, P), acc (4, K) float64."""
    g0, g1, g2, g3 = g[r], g[r + 1], g[r + 2], g[r + 3]
    x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
    # A float32 zero: the sums take the arrays' dtype (float32 + float64 is float64).
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for p in range(g.shape[1]):
        u0, u1, u2, u3 = x0[p], x1[p], x2[p], x3[p]
        s00 += g0[p] * u0
        s01 += g0[p] * u1
        s02 += g0[p] * u2
        s03 += g0[p] * u3
        s10 += g1[p] * u0
        s11 += g1[p] * u1
        s12 += g1[p] * u2
        s13 += g1[p] * u3
        s20 += g2[p] * u0
        s21 += g2[p] * u1
        s22 += g2[p] * u2
        s23 += g2[p] * u3
        s30 += g3[p] * u0
        s31 += g3[p] * u1
        s32 += g3[p] * u2
        s33 += g3[p] * u3
    acc[0, k] += s00
    acc[0, k + 1] += s01
    acc[0, k + 2] += s02
    acc[0, k + 3] += s03
    acc[1, k] += s10
    acc[1, k + 1] += s11
    acc[1, k + 2] += s12
    acc[1, k + 3] += s13
    acc[2, k] += s20
    acc[2, k + 1] += s21
    acc[2, k + 2] += s22
    acc[2, k + 3] += s23
    acc[3, k] += s30
    acc[3, k + 1] += s31
    acc[3, k + 2] += s32
    acc[3, k + 3] += s33


def _dot(u, v):
    """u . v for two rows of one length, in their dtype: the entries left over after the blocks."""
    s = np.float32(0.0)
    for p in range(u.shape[0]):
        s += u[p] * v[p]
    return s


sixteen_sums = numba.njit(**_serial)(_sixteen_sums)
dot = numba.njit(**_serial)(_dot)


def _sum_outer(g, x, out):
    """out = sum over n of g[n] @ x[n].T.

    g   (N, R, P)
    x   (N, K, P)
    out (R, K)       overwritten (any float dtype; the sums over images are float64)
    """
    N, R, P = g.shape
    K = x.shape[1]
    K4 = K - K % 4
    for block in prange((R + 3) // 4):           # 4 rows of out; the last block may have fewer
        r0 = 4 * block
        rows = min(4, R - r0)
        acc = np.zeros((4, K))                   # float64 sums over the images
        for n in range(N):
            g_n, x_n = g[n], x[n]
            k0 = 0                               # columns from k0 on go one entry at a time
            if rows == 4:
                for k in range(0, K4, 4):
                    sixteen_sums(g_n, x_n, r0, k, acc)
                k0 = K4
            for i in range(rows):
                for k in range(k0, K):
                    acc[i, k] += dot(g_n[r0 + i], x_n[k])
        for i in range(rows):
            for k in range(K):
                out[r0 + i, k] = acc[i, k]


sum_outer = numba.njit(**_parallel)(_sum_outer)


# ---------------------------------------------------------------------------
# What the layers call: the products for a whole batch, in the better layout.
#
# Late in MobileNet the images are small (6x6, 3x3 pixels) and a row of
# pixels is shorter than one vector register: per-image loops would spend
# their time on leftovers.  Below ``FOLD_BELOW`` pixels the batch is folded
# into one long image first, channel-major (K, N*P), so that each product
# is one matrix product with N*P columns; the copies in and out are cheap
# next to it at such sizes.
# ---------------------------------------------------------------------------

FOLD_BELOW = 64


def _fold(b):
    """(N, K, P) -> (1, K, N*P): image n's pixels are columns n*P ... n*P + P - 1."""
    N, K, P = b.shape
    return np.ascontiguousarray(b.transpose(1, 0, 2)).reshape(1, K, N * P)


def _unfold(b, N):
    """The inverse of ``_fold``: (1, K, N*P) -> (N, K, P)."""
    K = b.shape[1]
    return np.ascontiguousarray(b.reshape(K, N, -1).transpose(1, 0, 2))


def batched_matmul(a, b):
    """``a @ b[n]`` for every image n: a (R, K), b (N, K, P) -> (N, R, P), b's dtype.

    What ``np.matmul(a, b)`` computes, on all of Numba's threads.
    """
    a = np.ascontiguousarray(a, dtype=b.dtype)
    b = np.ascontiguousarray(b)
    N, K, P = b.shape
    if P >= FOLD_BELOW or N == 1:
        out = np.empty((N, a.shape[0], P), b.dtype)
        matmul_images(a, b, out)
        return out
    out = np.empty((1, a.shape[0], N * P), b.dtype)
    matmul_images(a, _fold(b), out)
    return _unfold(out, N)


def batched_sum_outer(g, x):
    """The sum over images n of ``g[n] @ x[n].T``: g (N, R, P), x (N, K, P) -> (R, K), g's dtype.

    What ``np.matmul(g, x.transpose(0, 2, 1)).sum(axis=0)`` computes, on all
    of Numba's threads, summing over the images in float64.
    """
    g = np.ascontiguousarray(g)
    x = np.ascontiguousarray(x, dtype=g.dtype)
    out = np.empty((g.shape[1], x.shape[1]), g.dtype)
    if g.shape[2] < FOLD_BELOW and g.shape[0] > 1:
        g, x = _fold(g), _fold(x)
    sum_outer(g, x, out)
    return out
