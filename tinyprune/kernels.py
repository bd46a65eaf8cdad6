"""The hot loops, each written twice: once to read, once to run.

Every kernel below is first a plain Python function over NumPy arrays, with
the shapes it expects in its docstring.  The line after it compiles the very
same function with Numba (``cache=True``, so the machine code is kept on disk
and later interpreter start-ups skip the compilation).  The plain function is
the textbook: you can step through it in a debugger, and the tests run it on
small inputs to check that the compiled one agrees.

Conventions shared by all kernels:

* activations are NCHW, conv weights OIHW, as everywhere in tinyprune;
* kernels write into output arrays they are given (``out``, ``dx``, ...)
  instead of allocating, so the layers decide what is allocated and when;
* kernels never check their arguments: the layers validate shapes before a
  kernel runs, so a user mistake is reported in Python, not as a crash.

``prange`` is Numba's parallel ``range``; in plain Python it *is* ``range``.
"""

import math

import numba
from numba import prange

# Compilation options shared by every kernel.  ``fastmath`` is left off on
# purpose: results must agree with the plain functions to float rounding.
_serial = dict(cache=True, nogil=True)
_parallel = dict(cache=True, nogil=True, parallel=True)


def _first_inside(k, pad, stride):
    """Smallest output index i with i*stride + k - pad >= 0."""
    return max(0, -((k - pad) // stride))


def _last_inside(k, pad, stride, size_in, size_out):
    """One past the largest output index i with i*stride + k - pad < size_in."""
    return min(size_out, (size_in - 1 + pad - k) // stride + 1)


first_inside = numba.njit(**_serial)(_first_inside)
last_inside = numba.njit(**_serial)(_last_inside)


# ---------------------------------------------------------------------------
# Depthwise convolution: one 2-D filter per channel, channels never mix.
#
#   y[n, c, i, j] = sum_{a, b} w[c, a, b] * x[n, c, i*s + a - p, j*s + b - p]
#
# (terms whose input index falls outside the image read the zero padding and
# are skipped).  Loops are ordered so the innermost one walks a row of the
# image: the bounds of the row are worked out once per filter tap instead of
# testing every pixel against the border.
# ---------------------------------------------------------------------------

def _depthwise_forward(x, w, stride, pad, out):
    """Depthwise convolution.

    x   (N, C, H, W)      input
    w   (C, KH, KW)       one filter per channel
    out (N, C, HO, WO)    overwritten with the result
    """
    N, C, H, W = x.shape
    KH, KW = w.shape[1], w.shape[2]
    HO, WO = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        y = out[n, c]
        y[:, :] = 0.0
        for a in range(KH):
            i0 = first_inside(a, pad, stride)
            i1 = last_inside(a, pad, stride, H, HO)
            for b in range(KW):
                j0 = first_inside(b, pad, stride)
                j1 = last_inside(b, pad, stride, W, WO)
                wab = w[c, a, b]
                for i in range(i0, i1):
                    r = i * stride + a - pad
                    for j in range(j0, j1):
                        y[i, j] += wab * x[n, c, r, j * stride + b - pad]


def _depthwise_backward(x, w, dy, stride, pad, dx, dw):
    """Gradients of the depthwise convolution.

    Each tap w[c, a, b] met the input pixel x[n, c, r, q] in output (i, j),
    so the chain rule sends dy[n, c, i, j] * w[c, a, b] back to that pixel
    and dy[n, c, i, j] * x[n, c, r, q] to the tap.

    x  (N, C, H, W), w (C, KH, KW), dy (N, C, HO, WO)
    dx (N, C, H, W)   overwritten with dL/dx
    dw (C, KH, KW)    overwritten with dL/dw
    """
    N, C, H, W = x.shape
    KH, KW = w.shape[1], w.shape[2]
    HO, WO = dy.shape[2], dy.shape[3]
    for c in prange(C):
        for a in range(KH):
            for b in range(KW):
                dw[c, a, b] = 0.0
        for n in range(N):
            g = dy[n, c]
            xin = x[n, c]
            dxin = dx[n, c]
            dxin[:, :] = 0.0
            for a in range(KH):
                i0 = first_inside(a, pad, stride)
                i1 = last_inside(a, pad, stride, H, HO)
                for b in range(KW):
                    j0 = first_inside(b, pad, stride)
                    j1 = last_inside(b, pad, stride, W, WO)
                    wab = w[c, a, b]
                    acc = 0.0
                    for i in range(i0, i1):
                        r = i * stride + a - pad
                        for j in range(j0, j1):
                            q = j * stride + b - pad
                            dxin[r, q] += wab * g[i, j]
                            acc += g[i, j] * xin[r, q]
                    dw[c, a, b] += acc


depthwise_forward = numba.njit(**_parallel)(_depthwise_forward)
depthwise_backward = numba.njit(**_parallel)(_depthwise_backward)


# ---------------------------------------------------------------------------
# Full convolution as a matrix product.
#
# im2col copies every receptive field of the input into a column, so that
#   y[n] = W.reshape(C_out, C_in*KH*KW) @ cols[n]
# is one BLAS call per image.  Rows of cols are ordered (c, a, b), the same
# order in which an OIHW weight is flattened.  col2im is its adjoint: it adds
# every column entry back onto the pixel it was copied from, which is exactly
# the backward pass of the copy.
# ---------------------------------------------------------------------------

def _im2col(x, KH, KW, stride, pad, cols):
    """Unfold receptive fields into columns.

    x    (N, C, H, W)
    cols (N, C*KH*KW, HO*WO)   overwritten; zero where a field hangs over the
                               border (the zero padding)
    """
    N, C, H, W = x.shape
    HO = (H + 2 * pad - KH) // stride + 1
    WO = (W + 2 * pad - KW) // stride + 1
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for a in range(KH):
            i0 = first_inside(a, pad, stride)
            i1 = last_inside(a, pad, stride, H, HO)
            for b in range(KW):
                j0 = first_inside(b, pad, stride)
                j1 = last_inside(b, pad, stride, W, WO)
                row = cols[n, (c * KH + a) * KW + b]
                row[:] = 0.0
                for i in range(i0, i1):
                    r = i * stride + a - pad
                    for j in range(j0, j1):
                        row[i * WO + j] = x[n, c, r, j * stride + b - pad]


def _col2im(cols, KH, KW, stride, pad, dx):
    """Fold columns back onto the image, adding overlapping entries.

    cols (N, C*KH*KW, HO*WO)
    dx   (N, C, H, W)          overwritten with the folded sum
    """
    N, C, H, W = dx.shape
    HO = (H + 2 * pad - KH) // stride + 1
    WO = (W + 2 * pad - KW) // stride + 1
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        img = dx[n, c]
        img[:, :] = 0.0
        for a in range(KH):
            i0 = first_inside(a, pad, stride)
            i1 = last_inside(a, pad, stride, H, HO)
            for b in range(KW):
                j0 = first_inside(b, pad, stride)
                j1 = last_inside(b, pad, stride, W, WO)
                row = cols[n, (c * KH + a) * KW + b]
                for i in range(i0, i1):
                    r = i * stride + a - pad
                    for j in range(j0, j1):
                        img[r, j * stride + b - pad] += row[i * WO + j]


im2col = numba.njit(**_parallel)(_im2col)
col2im = numba.njit(**_parallel)(_col2im)


# ---------------------------------------------------------------------------
# Batch normalisation over (N, H, W) for each channel.
#
# Forward (train):  mu = mean(x),  var = mean((x - mu)^2),
#                   xhat = (x - mu) / sqrt(var + eps),  y = gamma*xhat + beta.
# Backward, with M = N*H*W values per channel (every xhat depends on every x
# of its channel through mu and var):
#   dbeta  = sum(dy)
#   dgamma = sum(dy * xhat)
#   dx     = gamma / sqrt(var + eps) / M * (M*dy - dbeta - xhat*dgamma)
# Sums are accumulated in float64 whatever the array type, so float32
# statistics over 70 000 values per channel do not drift.
# ---------------------------------------------------------------------------

def _batchnorm_train_forward(x, gamma, beta, eps, y, mean, var):
    """Normalise with the batch's own statistics.

    x, y        (N, C, L)   L = H*W (the layer passes a reshaped view)
    gamma, beta (C,)
    mean, var   (C,) float64, overwritten with the batch mean and the biased
                variance (the caller derives the unbiased one for the
                running estimate)
    """
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        s = 0.0
        for n in range(N):
            for k in range(L):
                s += x[n, c, k]
        mu = s / M
        ss = 0.0
        for n in range(N):
            for k in range(L):
                d = x[n, c, k] - mu
                ss += d * d
        v = ss / M
        scale = gamma[c] / math.sqrt(v + eps)
        shift = beta[c] - mu * scale
        for n in range(N):
            for k in range(L):
                y[n, c, k] = x[n, c, k] * scale + shift
        mean[c] = mu
        var[c] = v


def _batchnorm_train_backward(x, dy, gamma, mean, var, eps, dx, dgamma, dbeta):
    """Gradients of train-mode batch normalisation.

    x, dy, dx   (N, C, L)   dx is overwritten
    gamma       (C,)
    mean, var   (C,) float64, the statistics the forward pass used
    dgamma, dbeta (C,)      overwritten
    """
    N, C, L = x.shape
    M = N * L
    for c in prange(C):
        mu = mean[c]
        inv = 1.0 / math.sqrt(var[c] + eps)
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for n in range(N):
            for k in range(L):
                g = dy[n, c, k]
                sum_dy += g
                sum_dy_xhat += g * (x[n, c, k] - mu) * inv
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        k_c = gamma[c] * inv / M
        for n in range(N):
            for k in range(L):
                xhat = (x[n, c, k] - mu) * inv
                dx[n, c, k] = k_c * (M * dy[n, c, k] - sum_dy - xhat * sum_dy_xhat)


def _scale_shift(x, scale, shift, y):
    """y[n, c, k] = x[n, c, k] * scale[c] + shift[c] (eval-mode batch norm).

    x, y (N, C, L);  scale, shift (C,)
    """
    N, C, L = x.shape
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        a = scale[c]
        b = shift[c]
        for k in range(L):
            y[n, c, k] = x[n, c, k] * a + b


batchnorm_train_forward = numba.njit(**_parallel)(_batchnorm_train_forward)
batchnorm_train_backward = numba.njit(**_parallel)(_batchnorm_train_backward)
scale_shift = numba.njit(**_parallel)(_scale_shift)


# ---------------------------------------------------------------------------
# slopehtanh, elementwise on flat arrays:
#   f(x) = x                 for -1 <= x <= 1
#        = 1 - (x - 1)/4     for x > 1
#        = -1 - (x + 1)/4    for x < -1
#   f'(x) = 1 inside [-1, 1], -1/4 outside.
# ---------------------------------------------------------------------------

def _slopehtanh_forward(x, y):
    """y = slopehtanh(x);  x, y flat (size,) arrays of one dtype."""
    for k in prange(x.size):
        v = x[k]
        if v > 1.0:
            y[k] = 1.0 - (v - 1.0) * 0.25
        elif v < -1.0:
            y[k] = -1.0 - (v + 1.0) * 0.25
        else:
            y[k] = v


def _slopehtanh_backward(x, dy, dx):
    """dx = dy * slopehtanh'(x);  flat (size,) arrays of one dtype."""
    for k in prange(x.size):
        v = x[k]
        if v > 1.0 or v < -1.0:
            dx[k] = -0.25 * dy[k]
        else:
            dx[k] = dy[k]


slopehtanh_forward = numba.njit(**_parallel)(_slopehtanh_forward)
slopehtanh_backward = numba.njit(**_parallel)(_slopehtanh_backward)
