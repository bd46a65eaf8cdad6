"""The loops of the eval-mode fast path (see :mod:`tinyprune.fused`), each written twice.

As in :mod:`tinyprune.kernels`: every kernel is a plain Python function
with its shapes in the docstring, compiled on the line after it by Numba
(``cache=True``); the plain function is there to be read and stepped
through, and the tests check that both give the same numbers.  A plain
function calls the compiled helpers; to step through those as well, run
with ``NUMBA_DISABLE_JIT=1``.  The depthwise convolutions are in
:mod:`tinyprune.fused_depthwise`, the full ones (MobileNet's first layer)
in :mod:`tinyprune.fused_conv`.

Every kernel computes a *fused step* on a *tile* of T images: a convolution
with its bias (the folded BatchNorm) and then the activation, applied to
each row while it is still in the level-1 cache, instead of three passes
over the whole batch.  Activations are numbered (``IDENTITY`` ...
``SLOPEHTANH``) so that a step can be described by integers.

Two layouts of a tile, because what makes a loop fast is a long innermost
run of contiguous numbers, and which axis is long changes along MobileNet:

* *planes*, ``(C, T, H, W)``: channel c of every image in one block.  Good
  for the first layers, where a channel of a 48x48 image is 2304 numbers
  and there are 8 to 32 channels.
* *pixels*, ``(P, C)`` with P = T*H*W (rounded up to a multiple of 8, the
  matrix product's block; the extra rows hold zeros or don't-care values):
  all channels of a pixel in one row.  Good for the last layers, where a 6x6 or 3x3 image has 36 or 9
  pixels per channel but 128 to 256 channels.

Channel counts are multiples of 4 (``fused.py`` pads the weights with
zeros, so the extra channels hold zeros): the matrix product then takes
its inputs 4 at a time with none left over.  Numba checks an array index
for being negative (Python's ``a[-1]``) unless it can see that it is not;
such a check in an inner loop stops it from being turned into vector
instructions.  So inner loops index a slice by the bare loop counter, or
with unsigned numbers (``products.unsigned``), and divisions stay out of
them (a ``%`` is many times slower than an addition).  An inner loop also
costs something each time it starts (the compiler checks that the arrays
it writes do not overlap those it reads): few long loops beat many short
ones, and a loop over whole rows beats one over a block of columns.
"""

import numba
import numpy as np

from .products import block_of_rows

__all__ = ["IDENTITY", "RELU", "HARDTANH", "SLOPEHTANH"]

# Activation numbers, as a step stores them.
IDENTITY, RELU, HARDTANH, SLOPEHTANH = 0, 1, 2, 3

# Kernels run on one thread each (the program in fused.py splits tiles over
# threads); "contract" lets the compiler fuse a*b + c into one instruction.
_serial = dict(cache=True, nogil=True, fastmath={"contract"})


# ---------------------------------------------------------------------------
# Activations, applied in place to a row that was just written.
# ---------------------------------------------------------------------------

def _activate(y, act):
    """y = act(y) in place; y a 1-D array.  The formulas are those of kernels.py.

    The constants are made in y's own type: a float32 row compared with
    Python's 1.0 (a float64) would be widened to float64 and back, which
    made slopehtanh twice as slow.
    """
    zero, one, quarter = y.dtype.type(0.0), y.dtype.type(1.0), y.dtype.type(0.25)
    if act == RELU:
        for k in range(y.size):
            y[k] = max(y[k], zero)
    elif act == HARDTANH:
        for k in range(y.size):
            y[k] = min(max(y[k], -one), one)
    elif act == SLOPEHTANH:
        for k in range(y.size):
            v = y[k]
            h = min(max(v, -one), one)
            y[k] = h - (v - h) * quarter


# Inlined into every caller, as is start_with_bias below: a product on small
# images calls them once per output row, and as calls they cost a step of
# 32 channels on 16 images of 6x6 a microsecond of its ten.
activate = numba.njit(**_serial, inline="always")(_activate)


# ---------------------------------------------------------------------------
# Moving images between the caller's NCHW batch and the two tile layouts.
# ---------------------------------------------------------------------------

def _copy_row(src, dst):
    """dst[k] = src[k] for 1-D arrays of one size.

    A loop, not ``dst[:] = src``: Numba copies an array assigned to a
    slice through a temporary (the two might overlap), two to three times
    slower.
    """
    for k in range(src.size):
        dst[k] = src[k]


copy_row = numba.njit(**_serial)(_copy_row)


def _gather(x, n0, tile):
    """tile[c, t] = x[n0 + t, c] (planes); the rows c >= C (channel padding) are zeroed.

    x (N, C, H, W) the caller's images;  tile (CP, T, H, W), CP >= C.
    Each image plane is copied as one flat row (``copy_row``).
    """
    C = x.shape[1]
    CP, T = tile.shape[0], tile.shape[1]
    L = tile.shape[2] * tile.shape[3]
    for c in range(CP):
        for t in range(T):
            if c < C:
                copy_row(x[n0 + t, c].reshape(L), tile[c, t].reshape(L))
            else:
                tile[c, t] = 0.0


def _scatter_planes(tile, n0, out):
    """out[n0 + t, o] = tile[o, t] for the O channels of out (padding dropped).

    tile (OP, T, HO, WO) planes;  out (N, O, HO, WO), O <= OP.
    """
    L = tile.shape[2] * tile.shape[3]
    for o in range(out.shape[1]):
        for t in range(tile.shape[1]):
            copy_row(tile[o, t].reshape(L), out[n0 + t, o].reshape(L))


def _scatter_pixels(tile, n0, T, out):
    """out[n0 + t, o, i, j] = tile[(t*HO + i)*WO + j, o] for the T images and O channels of out.

    tile (P, OP) pixels, P >= T*HO*WO;  out (N, O, HO, WO), O <= OP.
    """
    O, HO, WO = out.shape[1], out.shape[2], out.shape[3]
    for t in range(T):
        for i in range(HO):
            for j in range(WO):
                row = tile[(t * HO + i) * WO + j]
                for o in range(O):
                    out[n0 + t, o, i, j] = row[o]


def _to_pixels(planes, pixels):
    """pixels[(t*H + i)*W + j, c] = planes[c, t, i, j]; the rows after T*H*W are zeroed.

    planes (C, T, H, W);  pixels (P, C), P >= T*H*W.
    """
    C = planes.shape[0]
    flat = planes.reshape(C, planes.size // C)
    M = flat.shape[1]
    for m in range(M):
        row = pixels[m]
        for c in range(C):
            row[c] = flat[c, m]
    pixels[M:] = 0.0


def _to_planes(pixels, planes):
    """planes[c, t, i, j] = pixels[(t*H + i)*W + j, c].  pixels (P, C), planes (C, T, H, W).

    Sixteen pixel rows at a time, so that the rows being read stay in the
    level-1 cache while every channel takes its 16 numbers from them.
    """
    C = planes.shape[0]
    flat = planes.reshape(C, planes.size // C)
    M = flat.shape[1]
    for m0 in range(0, M, 16):
        m1 = min(m0 + 16, M)
        block = pixels[m0:m1]
        for c in range(C):
            row = flat[c, m0:m1]
            for k in range(m1 - m0):
                row[k] = block[k, c]


gather = numba.njit(**_serial)(_gather)
scatter_planes = numba.njit(**_serial)(_scatter_planes)
scatter_pixels = numba.njit(**_serial)(_scatter_pixels)
to_pixels = numba.njit(**_serial)(_to_pixels)
to_planes = numba.njit(**_serial)(_to_planes)


# ---------------------------------------------------------------------------
# The matrix product + bias + activation, for 1x1 convolutions and dense
# layers in either layout:
#
#   planes:  y (O, P) = W (O, K) @ x (K, P)      + bias down the rows
#   pixels:  y (P, O) = x (P, K) @ W.T (K, O)    + bias along each row
#
# In both, 8 rows of ``a`` meet 4 rows of ``b`` at a time, in the block
# kernel the convolutions' training products use too
# (``products.eight_rows``, whose comment explains it): every value loaded
# from ``b`` serves 8 outputs and every output row is loaded and stored once
# per 4 inputs.  Rows left over after the blocks of 8 go 4 at a time, then
# one at a time, with the same sums in the same order
# (``products.block_of_rows``, which the training products use too).
# ---------------------------------------------------------------------------

def _start_with_bias(row, bias, r, n0):
    """row[n] = bias[r] for every n if r >= 0, else row[n] = bias[n0 + n].

    A loop rather than ``row[:] = ...``: Numba copies a slice assigned
    from an array through a temporary (the two might overlap), which here
    cost a fifth of the whole product.
    """
    if r >= 0:
        value = bias[r]
        for n in range(row.size):
            row[n] = value
    else:
        source = bias[n0:n0 + row.size]
        for n in range(row.size):
            row[n] = source[n]


start_with_bias = numba.njit(**_serial, inline="always")(_start_with_bias)


def _matmul_act(a, b, bias, bias_per_row, act, y):
    """y = act(a @ b + bias), bias added down the rows (``bias_per_row``) or along them.

    a (R, K);  b (K, N);  y (R, N) overwritten;  bias (R,) or (N,).
    K is a multiple of 4.  Each block of 8 output rows is started with the
    bias, summed and activated in one go.  Whole rows, from column 0 to N:
    measured, handing ``eight_rows`` blocks of columns (n0 ... n1 < N) to
    keep them in the level-1 cache made it 1.3x to 2x slower (the compiler
    could then no longer tell that the rows it writes do not overlap).
    """
    R = a.shape[0]
    N = b.shape[1]
    for r0 in range(0, R, 8):
        r1 = min(r0 + 8, R)
        for r in range(r0, r1):
            start_with_bias(y[r], bias, r if bias_per_row else -1, 0)
        block_of_rows(a, b, r0, r1 - r0, 0, N, y)
        for r in range(r0, r1):
            activate(y[r], act)


matmul_act = numba.njit(**_serial)(_matmul_act)


# ---------------------------------------------------------------------------
# Global mean pooling, in either layout.
# ---------------------------------------------------------------------------

def _mean_planes(x, y):
    """y[c, t] = mean of x[c, t] over its L pixels.  x (C, T, L);  y (C, T)."""
    C, T, L = x.shape
    for c in range(C):
        for t in range(T):
            s = np.float64(0.0)
            for k in range(L):
                s += x[c, t, k]
            y[c, t] = s / L


def _mean_pixels(x, T, L, y):
    """y[t] = mean of the rows t*L ... t*L + L - 1 of x; the rows of y after the T images are zeroed.

    x (P, C) pixels with L pixels for each of T images;  y (Q, C), Q >= T.
    """
    C = x.shape[1]
    total = np.zeros(C)                          # float64 sums, as in _mean_planes
    for t in range(T):
        total[:] = 0.0
        for k in range(t * L, t * L + L):
            row = x[k]
            for c in range(C):
                total[c] += row[c]
        out = y[t]
        for c in range(C):
            out[c] = total[c] / L
    y[T:] = 0.0


mean_planes = numba.njit(**_serial)(_mean_planes)
mean_pixels = numba.njit(**_serial)(_mean_pixels)
